/*
 * test_api.c: the C ABI of libmtasts, tested from the consumer's side.
 *
 * Every exported function of include/mtasts.h is called here the way a C MTA would call it, and
 * the way a careless one would: NULL for every pointer, invalid UTF-8, a 1 MiB domain, empty
 * strings, buffers that are too small, indexes past the end, values past the end of each enum.
 * Then the real thing against the local fixtures (`mtasts-fixture DIR`): every verdict and reason
 * the fixture domains can produce, DANE's included (signed zones with TLSA records), with the
 * handle API and with the default engine, from eight threads at once, and again in a forked child.
 *
 *     test_api CONFIG DIR
 *
 * CONFIG is the fixture's mtasts.toml, DIR the directory holding its certificate chains.
 * Run by tests/c/run.sh (plain, under AddressSanitizer + UBSan, and under valgrind).
 * Prints "N passed, M failed" last and exits non-zero on any failure.
 */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mtasts.h"

/* ------------------------------------------------------------------------------------------ */
/* A tiny assertion library: every check counts; a failure prints file:line and the expression. */

/* Failures printed per section before the rest are only counted (the thread test could print
 * thousands). */
#ifndef MAX_SHOWN
#define MAX_SHOWN 60
#endif

static pthread_mutex_t counts_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long n_passed, n_failed, n_shown;

static int record(int ok, const char *file, int line, const char *expr, const char *detail) {
    pthread_mutex_lock(&counts_lock);
    if (ok) {
        n_passed++;
    } else if (n_failed++, ++n_shown == MAX_SHOWN + 1) {
        fprintf(stderr, "(further failures are counted but not shown)\n");
    } else if (n_shown <= MAX_SHOWN) {
        fprintf(stderr, "%s:%d: FAILED: %s%s%s\n", file, line, expr, detail ? "  -- " : "",
                detail ? detail : "");
    }
    pthread_mutex_unlock(&counts_lock);
    return ok;
}

static unsigned long failures(void) {
    pthread_mutex_lock(&counts_lock);
    unsigned long n = n_failed;
    pthread_mutex_unlock(&counts_lock);
    return n;
}

#define CHECK(cond) record(!!(cond), __FILE__, __LINE__, #cond, NULL)

/* Integers, printed on failure. */
#define CHECK_EQ(a, b)                                                                           \
    do {                                                                                         \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);           \
        char m_[96];                                                                             \
        snprintf(m_, sizeof m_, "%llu != %llu", a_, b_);                                         \
        record(a_ == b_, __FILE__, __LINE__, #a " == " #b, m_);                                  \
    } while (0)

/* Strings, printed on failure. */
static void check_str(const char *file, int line, const char *expr, const char *a, const char *b) {
    char m[600];
    snprintf(m, sizeof m, "\"%.280s\" != \"%.280s\"", a ? a : "(null)", b ? b : "(null)");
    int ok = a && b && strcmp(a, b) == 0;
    record(ok, file, line, expr, ok ? NULL : m);
}
#define CHECK_STR(a, b) check_str(__FILE__, __LINE__, #a " == " #b, (a), (b))

/* A caller's buffer that must hold a NUL-terminated string. */
static const char *terminated(const char *buf, size_t size) {
    return memchr(buf, 0, size) ? buf : "(not NUL-terminated)";
}
#define CHECK_BUF(buf, want)                                                                     \
    check_str(__FILE__, __LINE__, #buf " == " #want, terminated((buf), sizeof(buf)), (want))

/* A call's status, printed by name on failure (with the last error). */
#define CHECK_STATUS(call, want)                                                                 \
    do {                                                                                         \
        mtasts_status got_ = (call);                                                             \
        mtasts_status want_ = (want);                                                            \
        char m_[700];                                                                            \
        if (got_ != want_) {                                                                     \
            char e_[512] = "";                                                                   \
            mtasts_last_error(e_, sizeof e_, NULL);                                              \
            snprintf(m_, sizeof m_, "got %s, want %s (last error: %s)", mtasts_status_str(got_), \
                     mtasts_status_str(want_), e_);                                              \
        }                                                                                        \
        record(got_ == want_, __FILE__, __LINE__, #call, got_ == want_ ? NULL : m_);             \
    } while (0)

/* The calling thread's last error, into the caller's buffer (a note if it does not fit). */
static void last_error(char *buf, size_t len) {
    size_t n = 0;
    if (mtasts_last_error(buf, len, &n) != MTASTS_STATUS_OK) {
        snprintf(buf, len, "(mtasts_last_error failed)");
    }
}

#define CHECK_LAST_ERROR_HAS(needle)                                                             \
    do {                                                                                         \
        char e_[1024];                                                                           \
        char m_[1200];                                                                           \
        last_error(e_, sizeof e_);                                                               \
        snprintf(m_, sizeof m_, "last error \"%s\" does not contain \"%s\"", e_, (needle));      \
        record(strstr(e_, (needle)) != NULL, __FILE__, __LINE__, "last error has " #needle, m_); \
    } while (0)

/* Bytes that no call may write over when it fails. */
#define SENTINEL 0xA5

static int all_bytes(const void *p, size_t n, unsigned char value) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != value) {
            return 0;
        }
    }
    return 1;
}

static void section(const char *name) {
    pthread_mutex_lock(&counts_lock);
    n_shown = 0; /* each section shows its own first failures */
    pthread_mutex_unlock(&counts_lock);
    printf("-- %s\n", name);
    fflush(stdout);
}

/* ------------------------------------------------------------------------------------------ */
/* The fixture: its configuration and its certificate chains.                                  */

static const char *config_path;

struct chain {
    const char *file;
    uint8_t *data;
    size_t len;
};

static struct chain chains[] = {
    {"mx-enforce.der", NULL, 0}, {"mx-enforce.pem", NULL, 0}, {"mx-testing.der", NULL, 0},
    {"mx-testing.pem", NULL, 0}, {"wrong-name.der", NULL, 0}, {"wrong-name.pem", NULL, 0},
    {"expired.der", NULL, 0},    {"expired.pem", NULL, 0},    {"untrusted.der", NULL, 0},
    {"untrusted.pem", NULL, 0},  {"mx-dane.der", NULL, 0},    {"mx-dane.pem", NULL, 0},
    {"mx-dane-selfsigned.der", NULL, 0}, {"mx-dane-selfsigned.pem", NULL, 0},
    {"mx-dane-mismatch.der", NULL, 0},   {"mx-dane-mismatch.pem", NULL, 0},
};
#define N_CHAINS (sizeof chains / sizeof chains[0])

static void load_chains(const char *dir) {
    for (size_t i = 0; i < N_CHAINS; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, chains[i].file);
        FILE *f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
            exit(2);
        }
        size_t cap = 4096, len = 0;
        uint8_t *data = malloc(cap);
        size_t n;
        while (data && (n = fread(data + len, 1, cap - len, f)) > 0) {
            len += n;
            if (len == cap) {
                cap *= 2;
                uint8_t *bigger = realloc(data, cap);
                if (!bigger) {
                    free(data);
                }
                data = bigger;
            }
        }
        fclose(f);
        if (!data || len == 0) {
            fprintf(stderr, "cannot read %s\n", path);
            exit(2);
        }
        chains[i].data = data;
        chains[i].len = len;
    }
}

static void free_chains(void) {
    for (size_t i = 0; i < N_CHAINS; i++) {
        free(chains[i].data);
        chains[i].data = NULL;
    }
}

static const struct chain *chain(const char *file) {
    for (size_t i = 0; i < N_CHAINS; i++) {
        if (strcmp(chains[i].file, file) == 0) {
            return &chains[i];
        }
    }
    fprintf(stderr, "no chain %s\n", file);
    exit(2);
}

/* ------------------------------------------------------------------------------------------ */
/* What the fixture domains must give.                                                        */

struct expect {
    const char *domain;
    const char *mx;
    const char *chain; /* a file of the fixture dir; NULL: no TLS was negotiated */
    mtasts_verdict verdict;
    mtasts_reason reason;
    mtasts_mode mode;
    const char *policy_id;
};

static const struct expect cases[] = {
    /* enforce: the good MX with its chain, as DER and as PEM */
    {"enforce.test", "mx.enforce.test", "mx-enforce.der", MTASTS_VERDICT_PASS, MTASTS_REASON_NONE,
     MTASTS_MODE_ENFORCE, "e1"},
    {"enforce.test", "mx.enforce.test", "mx-enforce.pem", MTASTS_VERDICT_PASS, MTASTS_REASON_NONE,
     MTASTS_MODE_ENFORCE, "e1"},
    /* ... names are case-insensitive and may end in the root dot */
    {"Enforce.TEST.", "MX.Enforce.Test.", "mx-enforce.der", MTASTS_VERDICT_PASS,
     MTASTS_REASON_NONE, MTASTS_MODE_ENFORCE, "e1"},
    /* ... every bad chain */
    {"enforce.test", "mx.enforce.test", "wrong-name.der", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_CERTIFICATE_HOST_MISMATCH, MTASTS_MODE_ENFORCE, "e1"},
    {"enforce.test", "mx.enforce.test", "wrong-name.pem", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_CERTIFICATE_HOST_MISMATCH, MTASTS_MODE_ENFORCE, "e1"},
    {"enforce.test", "mx.enforce.test", "expired.der", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_CERTIFICATE_EXPIRED, MTASTS_MODE_ENFORCE, "e1"},
    {"enforce.test", "mx.enforce.test", "expired.pem", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_CERTIFICATE_EXPIRED, MTASTS_MODE_ENFORCE, "e1"},
    {"enforce.test", "mx.enforce.test", "untrusted.der", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_CERTIFICATE_NOT_TRUSTED, MTASTS_MODE_ENFORCE, "e1"},
    {"enforce.test", "mx.enforce.test", "untrusted.pem", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_CERTIFICATE_NOT_TRUSTED, MTASTS_MODE_ENFORCE, "e1"},
    /* ... a chain for another name than the MX's */
    {"enforce.test", "mx.enforce.test", "mx-testing.der", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_CERTIFICATE_HOST_MISMATCH, MTASTS_MODE_ENFORCE, "e1"},
    /* ... no STARTTLS */
    {"enforce.test", "mx.enforce.test", NULL, MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_STARTTLS_NOT_SUPPORTED, MTASTS_MODE_ENFORCE, "e1"},
    /* ... an MX the policy does not name (the chain is not even looked at) */
    {"enforce.test", "mx.other.test", "mx-enforce.der", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_MX_MISMATCH, MTASTS_MODE_ENFORCE, "e1"},
    {"enforce.test", "mx.other.test", NULL, MTASTS_VERDICT_FAIL_ENFORCE, MTASTS_REASON_MX_MISMATCH,
     MTASTS_MODE_ENFORCE, "e1"},
    /* testing: the same failures are delivered and reported */
    {"testing.test", "mx.testing.test", "mx-testing.der", MTASTS_VERDICT_PASS, MTASTS_REASON_NONE,
     MTASTS_MODE_TESTING, "t1"},
    {"testing.test", "mx.testing.test", "mx-testing.pem", MTASTS_VERDICT_PASS, MTASTS_REASON_NONE,
     MTASTS_MODE_TESTING, "t1"},
    {"testing.test", "mx.testing.test", "mx-enforce.der", MTASTS_VERDICT_FAIL_TESTING,
     MTASTS_REASON_CERTIFICATE_HOST_MISMATCH, MTASTS_MODE_TESTING, "t1"},
    {"testing.test", "mx.testing.test", "expired.der", MTASTS_VERDICT_FAIL_TESTING,
     MTASTS_REASON_CERTIFICATE_EXPIRED, MTASTS_MODE_TESTING, "t1"},
    {"testing.test", "mx.testing.test", "untrusted.pem", MTASTS_VERDICT_FAIL_TESTING,
     MTASTS_REASON_CERTIFICATE_NOT_TRUSTED, MTASTS_MODE_TESTING, "t1"},
    {"testing.test", "mx.testing.test", NULL, MTASTS_VERDICT_FAIL_TESTING,
     MTASTS_REASON_STARTTLS_NOT_SUPPORTED, MTASTS_MODE_TESTING, "t1"},
    {"testing.test", "mx.other.test", "mx-testing.der", MTASTS_VERDICT_FAIL_TESTING,
     MTASTS_REASON_MX_MISMATCH, MTASTS_MODE_TESTING, "t1"},
    /* none: a policy that says "no policy" */
    {"none.test", "mx.none.test", "untrusted.der", MTASTS_VERDICT_NO_POLICY, MTASTS_REASON_NONE,
     MTASTS_MODE_NONE, "n1"},
    {"none.test", "mx.none.test", NULL, MTASTS_VERDICT_NO_POLICY, MTASTS_REASON_NONE,
     MTASTS_MODE_NONE, "n1"},
    /* no TXT record at all */
    {"nopolicy.test", "mx.nopolicy.test", NULL, MTASTS_VERDICT_NO_POLICY, MTASTS_REASON_NONE,
     MTASTS_MODE_NO_POLICY, ""},
    {"nopolicy.test", "mx.nopolicy.test", "expired.der", MTASTS_VERDICT_NO_POLICY,
     MTASTS_REASON_NONE, MTASTS_MODE_NO_POLICY, ""},
    /* a TXT record, but the policy cannot be fetched: deliver, and say why */
    {"broken.test", "mx.broken.test", "mx-enforce.der", MTASTS_VERDICT_NO_POLICY,
     MTASTS_REASON_STS_POLICY_FETCH_ERROR, MTASTS_MODE_NO_POLICY, ""},
    {"broken.test", "mx.broken.test", NULL, MTASTS_VERDICT_NO_POLICY,
     MTASTS_REASON_STS_POLICY_FETCH_ERROR, MTASTS_MODE_NO_POLICY, ""},
    /* DANE (docs/dane.md, "DANE in the verdict"): where the MX has DNSSEC-secure TLSA records,
     * DANE decides, whatever the MTA-STS mode. A DANE-EE 3 1 1 record matches the chain's key. */
    {"dane.test", "mx.dane.test", "mx-dane.der", MTASTS_VERDICT_PASS, MTASTS_REASON_NONE,
     MTASTS_MODE_ENFORCE, "d1"},
    /* ... and a self-signed certificate for another name with that key: DANE-EE looks at neither
     * names nor issuers, so it is delivered; the MTA-STS failure is reported (fail-testing) */
    {"dane.test", "mx.dane.test", "mx-dane-selfsigned.pem", MTASTS_VERDICT_FAIL_TESTING,
     MTASTS_REASON_CERTIFICATE_NOT_TRUSTED, MTASTS_MODE_ENFORCE, "d1"},
    /* ... a valid chain for the name with another key: no record matches */
    {"dane.test", "mx.dane.test", "mx-enforce.der", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_TLSA_INVALID, MTASTS_MODE_ENFORCE, "d1"},
    /* ... no TLS where DANE applies */
    {"dane.test", "mx.dane.test", NULL, MTASTS_VERDICT_FAIL_ENFORCE, MTASTS_REASON_DANE_REQUIRED,
     MTASTS_MODE_ENFORCE, "d1"},
    /* a DANE mismatch is enforced under a testing policy too */
    {"dane-mismatch.test", "mx.dane-mismatch.test", "mx-dane-mismatch.der",
     MTASTS_VERDICT_FAIL_ENFORCE, MTASTS_REASON_TLSA_INVALID, MTASTS_MODE_TESTING, "dm1"},
    /* a bogus TLSA signature, without any MTA-STS policy: a temporary failure of the MX */
    {"dane-bogus.test", "mx.dane-bogus.test", "mx-dane.pem", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_DNSSEC_INVALID, MTASTS_MODE_NO_POLICY, ""},
    /* an address literal has no policy (RFC 8461 §3.4: not an error) */
    {"127.0.0.1", "mx.enforce.test", NULL, MTASTS_VERDICT_NO_POLICY, MTASTS_REASON_NONE,
     MTASTS_MODE_NO_POLICY, ""},
    {"[127.0.0.1]", "mx.enforce.test", NULL, MTASTS_VERDICT_NO_POLICY, MTASTS_REASON_NONE,
     MTASTS_MODE_NO_POLICY, ""},
};
#define N_CASES (sizeof cases / sizeof cases[0])

static void describe(const struct expect *c, char *buf, size_t len) {
    snprintf(buf, len, "%s / %s / %s", c->domain, c->mx, c->chain ? c->chain : "no TLS");
}

/*
 * No detail without a failure; a detail for every failure that has something to say (which
 * name, which date, which fetch). "starttls-not-supported" says it all by itself.
 */
static int detail_fits(mtasts_reason reason, const char *detail) {
    if (reason == MTASTS_REASON_NONE) {
        return detail[0] == 0;
    }
    return reason == MTASTS_REASON_STARTTLS_NOT_SUPPORTED || detail[0] != 0;
}

/* One case through mtasts_engine_check; returns 1 if all is as expected. */
static int check_case(const mtasts_engine *engine, const struct expect *c) {
    const struct chain *ch = c->chain ? chain(c->chain) : NULL;
    mtasts_result r;
    memset(&r, SENTINEL, sizeof r);
    mtasts_status s =
        mtasts_engine_check(engine, c->domain, c->mx, ch ? ch->data : NULL, ch ? ch->len : 0, &r);
    char what[300], m[900];
    describe(c, what, sizeof what);
    if (s != MTASTS_STATUS_OK) {
        snprintf(m, sizeof m, "%s: status %s", what, mtasts_status_str(s));
        return record(0, __FILE__, __LINE__, "mtasts_engine_check", m);
    }
    int ok = r.verdict == c->verdict && r.reason == c->reason && r.mode == c->mode &&
             memchr(r.policy_id, 0, sizeof r.policy_id) && strcmp(r.policy_id, c->policy_id) == 0 &&
             memchr(r.detail, 0, sizeof r.detail) && detail_fits(c->reason, r.detail);
    snprintf(m, sizeof m,
             "%s: got %s/%s/mode %" PRIu32 "/id \"%.33s\" (detail \"%.255s\"), want %s/%s/mode %" PRIu32
             "/id \"%s\"",
             what, mtasts_verdict_str(r.verdict), mtasts_reason_str(r.reason), (uint32_t)r.mode,
             r.policy_id, r.detail, mtasts_verdict_str(c->verdict), mtasts_reason_str(c->reason),
             (uint32_t)c->mode, c->policy_id);
    return record(ok, __FILE__, __LINE__, "mtasts_engine_check verdict", ok ? NULL : m);
}

/* One case through mtasts_check (the default engine). */
static int check_case_default(const struct expect *c) {
    const struct chain *ch = c->chain ? chain(c->chain) : NULL;
    mtasts_verdict v = mtasts_check(c->domain, c->mx, ch ? ch->data : NULL, ch ? ch->len : 0);
    char what[300], m[600];
    describe(c, what, sizeof what);
    if (v == c->verdict) {
        return record(1, __FILE__, __LINE__, "mtasts_check verdict", NULL);
    }
    char e[256] = "";
    if (v == MTASTS_VERDICT_ERROR) {
        last_error(e, sizeof e);
    }
    snprintf(m, sizeof m, "%s: got %s, want %s %s", what, mtasts_verdict_str(v),
             mtasts_verdict_str(c->verdict), e);
    return record(0, __FILE__, __LINE__, "mtasts_check verdict", m);
}

/* The name-only check gives the verdict the MX name alone deserves. */
static void check_mx_case(const mtasts_engine *engine, const char *domain, const char *mx,
                          mtasts_verdict verdict, mtasts_reason reason, mtasts_mode mode) {
    mtasts_result r;
    memset(&r, SENTINEL, sizeof r);
    CHECK_STATUS(mtasts_engine_check_mx(engine, domain, mx, &r), MTASTS_STATUS_OK);
    char m[300];
    snprintf(m, sizeof m, "%s / %s: got %s/%s/mode %" PRIu32, domain, mx,
             mtasts_verdict_str(r.verdict), mtasts_reason_str(r.reason), (uint32_t)r.mode);
    record(r.verdict == verdict && r.reason == reason && r.mode == mode, __FILE__, __LINE__,
           "mtasts_engine_check_mx verdict", m);
}

/* ------------------------------------------------------------------------------------------ */
/* Version, numeric values and names                                                          */

static void test_version(void) {
    section("version");
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", MTASTS_VERSION_MAJOR, MTASTS_VERSION_MINOR,
             MTASTS_VERSION_PATCH);
    CHECK(mtasts_version() != NULL);
    CHECK_STR(mtasts_version(), want);
    CHECK(mtasts_version() == mtasts_version()); /* a static string */
    CHECK_EQ(MTASTS_VERSION_NUMBER,
             MTASTS_VERSION_MAJOR * 10000 + MTASTS_VERSION_MINOR * 100 + MTASTS_VERSION_PATCH);
#if MTASTS_VERSION_NUMBER < 100
#error "MTASTS_VERSION_NUMBER must be usable in #if"
#endif
}

static void test_enums(void) {
    section("stable numeric values and names");
    /* The values are ABI: a compiled MTA holds them. Never renumber. */
    CHECK_EQ(MTASTS_STATUS_OK, 0);
    CHECK_EQ(MTASTS_STATUS_NULL_ARGUMENT, 1);
    CHECK_EQ(MTASTS_STATUS_INVALID_UTF8, 2);
    CHECK_EQ(MTASTS_STATUS_INVALID_DOMAIN, 3);
    CHECK_EQ(MTASTS_STATUS_INVALID_MX, 4);
    CHECK_EQ(MTASTS_STATUS_CONFIG, 5);
    CHECK_EQ(MTASTS_STATUS_BUFFER_TOO_SMALL, 6);
    CHECK_EQ(MTASTS_STATUS_PANIC, 7);
    CHECK_EQ(MTASTS_STATUS_OUT_OF_RANGE, 8);
    CHECK_EQ(MTASTS_STATUS_NO_POLICY, 9);
    CHECK_EQ(MTASTS_STATUS_INVALID_ARGUMENT, 10);

    CHECK_EQ(MTASTS_VERDICT_NO_POLICY, 0);
    CHECK_EQ(MTASTS_VERDICT_PASS, 1);
    CHECK_EQ(MTASTS_VERDICT_FAIL_ENFORCE, 2);
    CHECK_EQ(MTASTS_VERDICT_FAIL_TESTING, 3);
    CHECK_EQ(MTASTS_VERDICT_ERROR, 4);

    CHECK_EQ(MTASTS_REASON_NONE, 0);
    CHECK_EQ(MTASTS_REASON_STARTTLS_NOT_SUPPORTED, 1);
    CHECK_EQ(MTASTS_REASON_CERTIFICATE_HOST_MISMATCH, 2);
    CHECK_EQ(MTASTS_REASON_CERTIFICATE_EXPIRED, 3);
    CHECK_EQ(MTASTS_REASON_CERTIFICATE_NOT_TRUSTED, 4);
    CHECK_EQ(MTASTS_REASON_VALIDATION_FAILURE, 5);
    CHECK_EQ(MTASTS_REASON_STS_POLICY_FETCH_ERROR, 6);
    CHECK_EQ(MTASTS_REASON_STS_POLICY_INVALID, 7);
    CHECK_EQ(MTASTS_REASON_STS_WEBPKI_INVALID, 8);
    CHECK_EQ(MTASTS_REASON_MX_MISMATCH, 9);
    CHECK_EQ(MTASTS_REASON_TLSA_INVALID, 10);
    CHECK_EQ(MTASTS_REASON_STORE_UNAVAILABLE, 11);
    CHECK_EQ(MTASTS_REASON_DNSSEC_INVALID, 12);
    CHECK_EQ(MTASTS_REASON_DANE_REQUIRED, 13);

    CHECK_EQ(MTASTS_STORE_NONE, 0);
    CHECK_EQ(MTASTS_STORE_OK, 1);
    CHECK_EQ(MTASTS_STORE_READ_ONLY, 2);
    CHECK_EQ(MTASTS_STORE_UNAVAILABLE, 3);

    CHECK_EQ(MTASTS_MODE_NO_POLICY, 0);
    CHECK_EQ(MTASTS_MODE_ENFORCE, 1);
    CHECK_EQ(MTASTS_MODE_TESTING, 2);
    CHECK_EQ(MTASTS_MODE_NONE, 3);

    /* The C types are 32-bit whatever the compiler does with enums. */
    CHECK_EQ(sizeof(mtasts_status), 4);
    CHECK_EQ(sizeof(mtasts_verdict), 4);
    CHECK_EQ(sizeof(mtasts_reason), 4);
    CHECK_EQ(sizeof(mtasts_mode), 4);
    mtasts_result r;
    CHECK_EQ(sizeof r.policy_id, 33);
    CHECK_EQ(sizeof r.detail, 256);

    static const char *const status_names[] = {
        "ok",     "null-argument", "invalid-utf8",     "invalid-domain", "invalid-mx",
        "config", "buffer-too-small", "panic", "out-of-range", "no-policy", "invalid-argument",
    };
    for (uint32_t i = 0; i < sizeof status_names / sizeof status_names[0]; i++) {
        CHECK_STR(mtasts_status_str(i), status_names[i]);
    }
    static const char *const verdict_names[] = {"no-policy", "pass", "fail-enforce", "fail-testing",
                                                "error"};
    for (uint32_t i = 0; i < sizeof verdict_names / sizeof verdict_names[0]; i++) {
        CHECK_STR(mtasts_verdict_str(i), verdict_names[i]);
    }
    static const char *const reason_names[] = {
        "none",
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
        "sts-policy-fetch-error",
        "sts-policy-invalid",
        "sts-webpki-invalid",
        "mx-mismatch",
        "tlsa-invalid",
        "store-unavailable",
        "dnssec-invalid",
        "dane-required",
    };
    for (uint32_t i = 0; i < sizeof reason_names / sizeof reason_names[0]; i++) {
        CHECK_STR(mtasts_reason_str(i), reason_names[i]);
    }
    /* Values this version does not know get "unknown", never NULL or a crash. */
    CHECK_STR(mtasts_status_str(MTASTS_STATUS_INVALID_ARGUMENT + 1), "unknown");
    CHECK_STR(mtasts_verdict_str(MTASTS_VERDICT_ERROR + 1), "unknown");
    CHECK_STR(mtasts_reason_str(MTASTS_REASON_DANE_REQUIRED + 1), "unknown");
    const uint32_t unknown[] = {100, 0x7fffffffu, 0x80000000u, UINT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        CHECK_STR(mtasts_status_str(unknown[i]), "unknown");
        CHECK_STR(mtasts_reason_str(unknown[i]), "unknown");
        CHECK_STR(mtasts_verdict_str(unknown[i]), "unknown");
    }
    /* Static strings: the same pointer every time. */
    CHECK(mtasts_status_str(1) == mtasts_status_str(1));
    CHECK(mtasts_reason_str(99) == mtasts_reason_str(98));
}

/* ------------------------------------------------------------------------------------------ */
/* mtasts_last_error and the (buf, len, out_n) convention                                     */

static void test_last_error(void) {
    section("mtasts_last_error");
    char buf[256];
    size_t n = 12345;

    /* No call has failed yet in this thread: the message is empty. */
    memset(buf, SENTINEL, sizeof buf);
    CHECK_STATUS(mtasts_last_error(buf, sizeof buf, &n), MTASTS_STATUS_OK);
    CHECK_EQ(n, 0);
    CHECK_BUF(buf, "");

    /* A failure leaves a message. */
    CHECK_STATUS(mtasts_engine_new(NULL, NULL), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_last_error(buf, sizeof buf, &n), MTASTS_STATUS_OK);
    CHECK(n > 0 && n == strlen(buf));
    CHECK(strstr(buf, "engine_out") != NULL);
    char message[256];
    snprintf(message, sizeof message, "%s", terminated(buf, sizeof buf));
    size_t need = n;

    /* out_n may be NULL. */
    memset(buf, SENTINEL, sizeof buf);
    CHECK_STATUS(mtasts_last_error(buf, sizeof buf, NULL), MTASTS_STATUS_OK);
    CHECK_BUF(buf, message);

    /* Exact fit: the message and its NUL. */
    memset(buf, SENTINEL, sizeof buf);
    n = 12345;
    CHECK_STATUS(mtasts_last_error(buf, need + 1, &n), MTASTS_STATUS_OK);
    CHECK_EQ(n, need);
    CHECK_BUF(buf, message);
    CHECK(all_bytes(buf + need + 1, sizeof buf - need - 1, SENTINEL)); /* nothing past len */

    /*
     * Too small by one (no room for the NUL), and len 0: BUFFER_TOO_SMALL, out_n = the length
     * needed, and nothing is written to the buffer.
     */
    memset(buf, SENTINEL, sizeof buf);
    n = 12345;
    CHECK_STATUS(mtasts_last_error(buf, need, &n), MTASTS_STATUS_BUFFER_TOO_SMALL);
    CHECK_EQ(n, need);
    CHECK(all_bytes(buf, sizeof buf, SENTINEL));
    n = 12345;
    CHECK_STATUS(mtasts_last_error(buf, 0, &n), MTASTS_STATUS_BUFFER_TOO_SMALL);
    CHECK_EQ(n, need);
    CHECK(all_bytes(buf, sizeof buf, SENTINEL));
    CHECK_STATUS(mtasts_last_error(buf, 1, NULL), MTASTS_STATUS_BUFFER_TOO_SMALL);
    CHECK(all_bytes(buf, sizeof buf, SENTINEL));

    /* NULL buf: an error, out_n untouched. */
    n = 12345;
    CHECK_STATUS(mtasts_last_error(NULL, sizeof buf, &n), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_EQ(n, 12345);
    n = 12345;
    CHECK_STATUS(mtasts_last_error(NULL, 0, &n), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_EQ(n, 12345);
    CHECK_STATUS(mtasts_last_error(NULL, 0, NULL), MTASTS_STATUS_NULL_ARGUMENT);
}

/*
 * The documented way to read a message of unknown length: ask with a small buffer, then retry
 * with out_n + 1 bytes. The retry must return the message of the call that failed, not a
 * message about the first mtasts_last_error call's own buffer.
 */
static void test_last_error_retry(void) {
    section("mtasts_last_error: size query, then retry");
    CHECK_STATUS(mtasts_engine_new("/nonexistent/mtasts-retry.toml", NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);
    char want[256];
    last_error(want, sizeof want);

    char small[4];
    size_t n = 0;
    CHECK_STATUS(mtasts_last_error(small, sizeof small, &n), MTASTS_STATUS_BUFFER_TOO_SMALL);
    CHECK_EQ(n, strlen(want));
    char *buf = malloc(n + 1);
    CHECK(buf != NULL);
    if (buf) {
        size_t n2 = 0;
        mtasts_status retry = mtasts_last_error(buf, n + 1, &n2);
        CHECK_STATUS(retry, MTASTS_STATUS_OK);
        if (retry == MTASTS_STATUS_OK) {
            CHECK_EQ(n2, n);
            CHECK_STR(buf, want);
        }
        free(buf);
    }
    /* A failed mtasts_last_error (NULL buf) must not replace the message either. */
    CHECK_STATUS(mtasts_last_error(NULL, 0, NULL), MTASTS_STATUS_NULL_ARGUMENT);
    char again[256];
    last_error(again, sizeof again);
    CHECK_BUF(again, want);
}

/* ------------------------------------------------------------------------------------------ */
/* NULL for every pointer argument of every function                                          */

static void test_null_arguments(const mtasts_engine *engine, const mtasts_policy *policy) {
    section("NULL arguments");
    const struct chain *good = chain("mx-enforce.der");
    mtasts_result r;
    char buf[64];
    size_t n;

    /* mtasts_check: NULL domain or mx is an error; NULL cert means "no TLS". */
    CHECK_EQ(mtasts_check(NULL, "mx.enforce.test", good->data, good->len), MTASTS_VERDICT_ERROR);
    CHECK_LAST_ERROR_HAS("domain");
    CHECK_EQ(mtasts_check("enforce.test", NULL, good->data, good->len), MTASTS_VERDICT_ERROR);
    CHECK_LAST_ERROR_HAS("mx");
    CHECK_EQ(mtasts_check(NULL, NULL, NULL, 0), MTASTS_VERDICT_ERROR);
    CHECK_EQ(mtasts_check("enforce.test", "mx.enforce.test", NULL, 0),
             MTASTS_VERDICT_FAIL_ENFORCE);
    CHECK_EQ(mtasts_check("enforce.test", "mx.enforce.test", NULL, 1234),
             MTASTS_VERDICT_FAIL_ENFORCE); /* NULL with a length: still "no TLS" */
    CHECK_EQ(mtasts_check("enforce.test", "mx.enforce.test", good->data, 0),
             MTASTS_VERDICT_FAIL_ENFORCE); /* a length of 0: "no TLS" */

    /* mtasts_engine_new: NULL engine_out is an error; NULL config_path means the defaults. */
    mtasts_engine *e = (mtasts_engine *)&r; /* a sentinel address, never dereferenced */
    CHECK_STATUS(mtasts_engine_new(config_path, NULL), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_new(NULL, NULL), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_new(NULL, &e), MTASTS_STATUS_OK);
    CHECK(e != NULL && e != (mtasts_engine *)&r);
    mtasts_engine_free(e);

    /* _free(NULL) does nothing. */
    mtasts_engine_free(NULL);
    mtasts_policy_free(NULL);

    /* mtasts_engine_check: each pointer; the result is untouched. */
    const mtasts_result *rp = &r;
#define UNTOUCHED_RESULT() CHECK(all_bytes(rp, sizeof *rp, SENTINEL))
    memset(&r, SENTINEL, sizeof r);
    CHECK_STATUS(mtasts_engine_check(NULL, "enforce.test", "mx.enforce.test", good->data,
                                     good->len, &r),
                 MTASTS_STATUS_NULL_ARGUMENT);
    UNTOUCHED_RESULT();
    CHECK_LAST_ERROR_HAS("engine");
    CHECK_STATUS(
        mtasts_engine_check(engine, NULL, "mx.enforce.test", good->data, good->len, &r),
        MTASTS_STATUS_NULL_ARGUMENT);
    UNTOUCHED_RESULT();
    CHECK_LAST_ERROR_HAS("domain");
    CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", NULL, good->data, good->len, &r),
                 MTASTS_STATUS_NULL_ARGUMENT);
    UNTOUCHED_RESULT();
    CHECK_LAST_ERROR_HAS("mx");
    CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", "mx.enforce.test", good->data,
                                     good->len, NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_LAST_ERROR_HAS("result");
    CHECK_STATUS(mtasts_engine_check(NULL, NULL, NULL, NULL, 0, NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);
    /* NULL cert is not an error: no TLS. */
    memset(&r, SENTINEL, sizeof r);
    CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", "mx.enforce.test", NULL, 0, &r),
                 MTASTS_STATUS_OK);
    CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
    CHECK_EQ(r.reason, MTASTS_REASON_STARTTLS_NOT_SUPPORTED);

    /* mtasts_engine_check_mx */
    memset(&r, SENTINEL, sizeof r);
    CHECK_STATUS(mtasts_engine_check_mx(NULL, "enforce.test", "mx.enforce.test", &r),
                 MTASTS_STATUS_NULL_ARGUMENT);
    UNTOUCHED_RESULT();
    CHECK_STATUS(mtasts_engine_check_mx(engine, NULL, "mx.enforce.test", &r),
                 MTASTS_STATUS_NULL_ARGUMENT);
    UNTOUCHED_RESULT();
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", NULL, &r),
                 MTASTS_STATUS_NULL_ARGUMENT);
    UNTOUCHED_RESULT();
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", "mx.enforce.test", NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_check_mx(NULL, NULL, NULL, NULL), MTASTS_STATUS_NULL_ARGUMENT);

    /* mtasts_engine_policy: policy_out untouched. */
    mtasts_policy *p = (mtasts_policy *)&r;
    CHECK_STATUS(mtasts_engine_policy(NULL, "enforce.test", &p), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK(p == (mtasts_policy *)&r);
    CHECK_STATUS(mtasts_engine_policy(engine, NULL, &p), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK(p == (mtasts_policy *)&r);
    CHECK_STATUS(mtasts_engine_policy(engine, "enforce.test", NULL), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_policy(NULL, NULL, NULL), MTASTS_STATUS_NULL_ARGUMENT);

    /* Policy accessors: NULL policy gives the documented neutral values. */
    CHECK_EQ(mtasts_policy_mode(NULL), MTASTS_MODE_NO_POLICY);
    CHECK_EQ(mtasts_policy_max_age(NULL), 0);
    CHECK_EQ(mtasts_policy_fetched_at(NULL), 0);
    CHECK_EQ(mtasts_policy_expires_at(NULL), 0);
    CHECK_EQ(mtasts_policy_mx_count(NULL), 0);

    /* mtasts_policy_id / mtasts_policy_mx: NULL policy or NULL buf; buf and out_n untouched. */
    memset(buf, SENTINEL, sizeof buf);
    n = 12345;
    CHECK_STATUS(mtasts_policy_id(NULL, buf, sizeof buf, &n), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK(all_bytes(buf, sizeof buf, SENTINEL));
    CHECK_EQ(n, 12345);
    CHECK_STATUS(mtasts_policy_id(policy, NULL, sizeof buf, &n), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_EQ(n, 12345);
    CHECK_STATUS(mtasts_policy_id(policy, NULL, 0, &n), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_EQ(n, 12345);
    CHECK_STATUS(mtasts_policy_id(NULL, NULL, 0, NULL), MTASTS_STATUS_NULL_ARGUMENT);

    CHECK_STATUS(mtasts_policy_mx(NULL, 0, buf, sizeof buf, &n), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK(all_bytes(buf, sizeof buf, SENTINEL));
    CHECK_EQ(n, 12345);
    CHECK_STATUS(mtasts_policy_mx(policy, 0, NULL, sizeof buf, &n), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_EQ(n, 12345);
    CHECK_STATUS(mtasts_policy_mx(NULL, 0, NULL, 0, NULL), MTASTS_STATUS_NULL_ARGUMENT);
    /* out_n may be NULL */
    CHECK_STATUS(mtasts_policy_id(policy, buf, sizeof buf, NULL), MTASTS_STATUS_OK);
    CHECK_BUF(buf, "e1");
    CHECK_STATUS(mtasts_policy_mx(policy, 0, buf, sizeof buf, NULL), MTASTS_STATUS_OK);
    CHECK_BUF(buf, "mx.enforce.test");
#undef UNTOUCHED_RESULT
}

/* ------------------------------------------------------------------------------------------ */
/* Bad strings: invalid UTF-8, empty, 1 MiB                                                   */

static void test_bad_strings(const mtasts_engine *engine) {
    section("invalid UTF-8, empty strings, 1 MiB strings");
    const struct chain *good = chain("mx-enforce.der");
    mtasts_result r;
    mtasts_policy *p;
    const mtasts_policy *const sentinel_policy = (const mtasts_policy *)&r;
    static const char *const bad_utf8[] = {
        "\xff\xfe.test",           /* bytes that never occur in UTF-8 */
        "enforce.test\xc3",         /* a truncated sequence */
        "\xc0\xaf" "enforce.test",  /* an overlong '/' */
        "\xed\xa0\x80.test",        /* a UTF-16 surrogate */
    };
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        const char *s = bad_utf8[i];
        memset(&r, SENTINEL, sizeof r);
        CHECK_STATUS(mtasts_engine_check(engine, s, "mx.enforce.test", good->data, good->len, &r),
                     MTASTS_STATUS_INVALID_UTF8);
        CHECK(all_bytes(&r, sizeof r, SENTINEL));
        CHECK_LAST_ERROR_HAS("UTF-8");
        /* An MX that is not UTF-8 is not a host name: it matches no pattern, so an enforce
         * policy fails it. An error would let a garbled MX record skip enforcement. */
        CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", s, good->data, good->len, &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
        CHECK_STATUS(mtasts_engine_check_mx(engine, s, "mx.enforce.test", &r),
                     MTASTS_STATUS_INVALID_UTF8);
        memset(&r, SENTINEL, sizeof r);
        CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", s, &r), MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
        CHECK_EQ(r.mode, MTASTS_MODE_ENFORCE);
        CHECK_STATUS(mtasts_engine_check_mx(engine, "testing.test", s, &r), MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_TESTING);
        CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
        p = (mtasts_policy *)sentinel_policy;
        CHECK_STATUS(mtasts_engine_policy(engine, s, &p), MTASTS_STATUS_INVALID_UTF8);
        CHECK(p == sentinel_policy);
        CHECK_EQ(mtasts_check(s, "mx.enforce.test", good->data, good->len), MTASTS_VERDICT_ERROR);
        CHECK_LAST_ERROR_HAS("UTF-8");
        CHECK_EQ(mtasts_check("enforce.test", s, good->data, good->len),
                 MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK_STATUS(mtasts_engine_record(engine, "enforce.test", s, MTASTS_REASON_NONE, NULL,
                                          NULL, NULL),
                     MTASTS_STATUS_OK);
        mtasts_engine *e = (mtasts_engine *)&r;
        CHECK_STATUS(mtasts_engine_new(s, &e), MTASTS_STATUS_INVALID_UTF8);
        CHECK(e == (mtasts_engine *)&r);
    }

    /* Empty strings are not names. */
    memset(&r, SENTINEL, sizeof r);
    CHECK_STATUS(mtasts_engine_check(engine, "", "mx.enforce.test", good->data, good->len, &r),
                 MTASTS_STATUS_INVALID_DOMAIN);
    CHECK(all_bytes(&r, sizeof r, SENTINEL));
    /* An MX that is not a host name matches no pattern: an enforce failure, never an error
     * (a forged MX record must not turn enforcement into "deliver as without MTA-STS"). */
    CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", "", good->data, good->len, &r), MTASTS_STATUS_OK);
    CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
    CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
    CHECK_STATUS(mtasts_engine_check_mx(engine, "", "", &r), MTASTS_STATUS_INVALID_DOMAIN);
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", "", &r), MTASTS_STATUS_OK);
    CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
    memset(&r, SENTINEL, sizeof r);
    CHECK_STATUS(mtasts_engine_check_mx(engine, ".", "mx.enforce.test", &r),
                 MTASTS_STATUS_INVALID_DOMAIN);
    CHECK(all_bytes(&r, sizeof r, SENTINEL));
    p = (mtasts_policy *)sentinel_policy;
    CHECK_STATUS(mtasts_engine_policy(engine, "", &p), MTASTS_STATUS_INVALID_DOMAIN);
    CHECK(p == sentinel_policy);
    CHECK_EQ(mtasts_check("", "mx.enforce.test", NULL, 0), MTASTS_VERDICT_ERROR);
    CHECK_EQ(mtasts_check("enforce.test", "", NULL, 0), MTASTS_VERDICT_FAIL_ENFORCE);
    mtasts_engine *e = (mtasts_engine *)&r;
    CHECK_STATUS(mtasts_engine_new("", &e), MTASTS_STATUS_CONFIG);
    CHECK(e == (mtasts_engine *)&r);

    /* MX names are ASCII host names only: UTS #46 would map each of these onto the listed
     * mx.enforce.test; none of them may pass. */
    static const char *const not_ascii_mx[] = {
        "\xef\xbd\x8d\xef\xbd\x98.enforce.test",   /* full-width "mx" */
        "mx\xef\xbc\x8e" "enforce\xef\xbc\x8e" "test", /* full-width full stops */
        "mx\xe3\x80\x82" "enforce\xe3\x80\x82" "test", /* U+3002 ideographic full stops */
        "MX.ENFORCE.TEST\xe3\x80\x82",                 /* U+3002 as the trailing dot */
    };
    for (size_t i = 0; i < sizeof not_ascii_mx / sizeof not_ascii_mx[0]; i++) {
        const char *mx = not_ascii_mx[i];
        CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", mx, good->data, good->len, &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
        CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", mx, &r), MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
        CHECK_EQ(mtasts_check("enforce.test", mx, good->data, good->len),
                 MTASTS_VERDICT_FAIL_ENFORCE);
    }
    /* The Policy Domain still accepts U-labels (here a full-width spelling of enforce.test). */
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce\xef\xbc\x8e\xef\xbd\x94\xef\xbd\x85\xef\xbd\x93\xef\xbd\x94",
                                        "mx.enforce.test", &r),
                 MTASTS_STATUS_OK);
    CHECK_EQ(r.verdict, MTASTS_VERDICT_PASS);

    /* Other malformed names. */
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce..test", "mx.enforce.test", &r),
                 MTASTS_STATUS_INVALID_DOMAIN);
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", "mx enforce test", &r), MTASTS_STATUS_OK);
    CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", "mx_1.evil.test", &r), MTASTS_STATUS_OK);
    CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
    CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
    CHECK_EQ(mtasts_check("enforce.test", "mx_1.evil.test", NULL, 0), MTASTS_VERDICT_FAIL_ENFORCE);
    CHECK_STATUS(mtasts_engine_check_mx(engine, "-enforce.test", "mx.enforce.test", &r),
                 MTASTS_STATUS_INVALID_DOMAIN);

    /* 1 MiB names: an error status, no crash, nothing written. */
    const size_t big = (size_t)1 << 20;
    char *huge = malloc(big + 1);
    CHECK(huge != NULL);
    if (huge) {
        memset(huge, 'a', big);
        huge[big] = 0;
        memset(&r, SENTINEL, sizeof r);
        CHECK_STATUS(mtasts_engine_check(engine, huge, "mx.enforce.test", good->data, good->len, &r),
                     MTASTS_STATUS_INVALID_DOMAIN);
        CHECK(all_bytes(&r, sizeof r, SENTINEL));
        CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", huge, good->data, good->len, &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
        CHECK_STATUS(mtasts_engine_check_mx(engine, huge, huge, &r), MTASTS_STATUS_INVALID_DOMAIN);
        p = (mtasts_policy *)sentinel_policy;
        CHECK_STATUS(mtasts_engine_policy(engine, huge, &p), MTASTS_STATUS_INVALID_DOMAIN);
        CHECK(p == sentinel_policy);
        CHECK_EQ(mtasts_check(huge, "mx.enforce.test", NULL, 0), MTASTS_VERDICT_ERROR);
        CHECK_EQ(mtasts_check("enforce.test", huge, NULL, 0), MTASTS_VERDICT_FAIL_ENFORCE);
        /* The last error is bounded or at least readable with the size query. */
        size_t n = 0;
        char tiny[1];
        CHECK(mtasts_last_error(tiny, sizeof tiny, &n) != MTASTS_STATUS_PANIC);

        /* 1 MiB of dotted labels (each one valid) and 1 MiB of non-ASCII letters (IDNA). */
        for (size_t i = 0; i < big; i += 2) {
            huge[i] = 'a';
            huge[i + 1] = '.';
        }
        huge[big - 1] = 'a';
        CHECK_STATUS(mtasts_engine_check_mx(engine, huge, "mx.enforce.test", &r),
                     MTASTS_STATUS_INVALID_DOMAIN);
        for (size_t i = 0; i + 1 < big; i += 2) {
            huge[i] = '\xc3'; /* U+00E9 */
            huge[i + 1] = '\xa9';
        }
        CHECK_STATUS(mtasts_engine_check_mx(engine, huge, "mx.enforce.test", &r),
                     MTASTS_STATUS_INVALID_DOMAIN);
        CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", huge, &r), MTASTS_STATUS_OK);
        CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);

        /* A 1 MiB garbage certificate chain: a failed check, not a failed call. */
        memset(huge, 0x30, big); /* DER SEQUENCE tags all the way */
        memset(&r, SENTINEL, sizeof r);
        CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", "mx.enforce.test",
                                         (const uint8_t *)huge, big, &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK(r.reason != MTASTS_REASON_NONE);
        CHECK(memchr(r.detail, 0, sizeof r.detail) != NULL);
        memcpy(huge, "-----BEGIN CERTIFICATE-----\n", 28);
        CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", "mx.enforce.test",
                                         (const uint8_t *)huge, big, &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK_EQ(mtasts_check("enforce.test", "mx.enforce.test", (const uint8_t *)huge, big),
                 MTASTS_VERDICT_FAIL_ENFORCE);
        /* A length no buffer can have (a negative ssize_t cast to size_t): refused, nothing
         * read, nothing written. */
        memset(&r, SENTINEL, sizeof r);
        CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", "mx.enforce.test", good->data,
                                         (size_t)PTRDIFF_MAX + 1, &r),
                     MTASTS_STATUS_INVALID_ARGUMENT);
        CHECK(all_bytes(&r, sizeof r, SENTINEL));
        CHECK_LAST_ERROR_HAS("PTRDIFF_MAX");
        CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", "mx.enforce.test", good->data,
                                         SIZE_MAX, &r),
                     MTASTS_STATUS_INVALID_ARGUMENT);
        CHECK_EQ(mtasts_check("enforce.test", "mx.enforce.test", good->data, SIZE_MAX),
                 MTASTS_VERDICT_ERROR);
        CHECK_LAST_ERROR_HAS("PTRDIFF_MAX");
        /* A chain cut short by one byte. */
        CHECK_STATUS(mtasts_engine_check(engine, "enforce.test", "mx.enforce.test", good->data,
                                         good->len - 1, &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        free(huge);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Configuration errors                                                                       */

static void test_config_errors(void) {
    section("configuration errors");
    mtasts_engine *e = (mtasts_engine *)&e;
    const char *missing = "/nonexistent/mtasts-test/mtasts.toml";
    CHECK_STATUS(mtasts_engine_new(missing, &e), MTASTS_STATUS_CONFIG);
    CHECK(e == (mtasts_engine *)&e);
    CHECK_LAST_ERROR_HAS(missing);

    /* A file that is there but wrong: the message names the file. */
    char path[] = "/tmp/mtasts-test-config-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        static const char bad[] = "[dns]\ntimeout_ms = \"soon\"\n";
        CHECK(write(fd, bad, sizeof bad - 1) == (ssize_t)(sizeof bad - 1));
        close(fd);
        CHECK_STATUS(mtasts_engine_new(path, &e), MTASTS_STATUS_CONFIG);
        CHECK(e == (mtasts_engine *)&e);
        CHECK_LAST_ERROR_HAS(path);
        CHECK_LAST_ERROR_HAS("timeout_ms");
        unlink(path);
    }
    /* A directory is not a configuration file. */
    CHECK_STATUS(mtasts_engine_new("/", &e), MTASTS_STATUS_CONFIG);
    CHECK(e == (mtasts_engine *)&e);
}

/* Per-domain overrides (README "Overrides"; OVR-2, OVR-3, OVR-8): an engine from a second
 * configuration, the fixture's with `[override."DOMAIN"]` tables appended. enforce.test, which
 * the fixture publishes, is skipped; pinned-c.test, which it does not, gets a pinned policy. */
static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        return 0;
    }
    int ok = fputs(text, f) >= 0;
    return (fclose(f) == 0) && ok;
}

static void test_overrides(void) {
    section("per-domain overrides");
    char dir[] = "/tmp/mtasts-test-override-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL)) {
        return;
    }
    char pinned[256], cfg[256], bad[256];
    snprintf(pinned, sizeof pinned, "%s/pinned.txt", dir);
    snprintf(cfg, sizeof cfg, "%s/override.toml", dir);
    snprintf(bad, sizeof bad, "%s/bad.toml", dir);
    CHECK(write_text(pinned, "version: STSv1\nmode: enforce\nmx: mx.pinned-c.test\nmax_age: 86400\n"));

    /* The fixture's configuration, then the overrides. */
    char base[8192] = "";
    FILE *f = fopen(config_path, "r");
    size_t n = f ? fread(base, 1, sizeof base - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    CHECK(n > 0 && n < sizeof base - 1);
    base[n] = '\0';
    char text[8192 + 1024];
    snprintf(text, sizeof text,
             "%s\n[override.\"Enforce.TEST\"]\nmode = \"none\"\n"
             "[override.\"pinned-c.test\"]\npolicy = \"pinned.txt\"\n",
             base);
    CHECK(write_text(cfg, text));

    mtasts_engine *engine = NULL;
    CHECK_STATUS(mtasts_engine_new(cfg, &engine), MTASTS_STATUS_OK);
    if (engine) {
        mtasts_result r;
        memset(&r, SENTINEL, sizeof r);
        /* Skipped: no policy although the fixture publishes an enforce one; the detail says why. */
        CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", "mx.other.test", &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_NO_POLICY);
        CHECK_EQ(r.reason, MTASTS_REASON_NONE);
        CHECK_BUF(r.policy_id, "");
        CHECK(strstr(terminated(r.detail, sizeof r.detail), "override") != NULL);
        /* Pinned: applied as a fetched policy, with the id `pinned`. */
        memset(&r, SENTINEL, sizeof r);
        CHECK_STATUS(mtasts_engine_check_mx(engine, "pinned-c.test", "mx.pinned-c.test", &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_PASS);
        CHECK_EQ(r.mode, MTASTS_MODE_ENFORCE);
        CHECK_BUF(r.policy_id, "pinned");
        memset(&r, SENTINEL, sizeof r);
        CHECK_STATUS(mtasts_engine_check(engine, "pinned-c.test", "mx.other.test", NULL, 0, &r),
                     MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
        mtasts_policy *policy = NULL;
        CHECK_STATUS(mtasts_engine_policy(engine, "pinned-c.test", &policy), MTASTS_STATUS_OK);
        CHECK(policy != NULL && mtasts_policy_mode(policy) == MTASTS_MODE_ENFORCE);
        mtasts_policy_free(policy);
        mtasts_engine_free(engine);
    }

    /* A pinned file that is not there: a configuration error naming the domain and the file. */
    snprintf(text, sizeof text, "%s\n[override.\"broken.test\"]\npolicy = \"missing.txt\"\n", base);
    CHECK(write_text(bad, text));
    engine = (mtasts_engine *)&engine;
    CHECK_STATUS(mtasts_engine_new(bad, &engine), MTASTS_STATUS_CONFIG);
    CHECK(engine == (mtasts_engine *)&engine);
    CHECK_LAST_ERROR_HAS("broken.test");
    CHECK_LAST_ERROR_HAS("missing.txt");

    unlink(pinned);
    unlink(cfg);
    unlink(bad);
    rmdir(dir);
}

/* The DANE-aware calls: what DANE decided beside the verdict, against the fixture's signed
 * zones (dane.test, dane-mismatch.test, dane-bogus.test; enforce.test and nopolicy.test have no
 * TLSA records, so MTA-STS alone decides there). */
struct dane_expect {
    const char *domain;
    const char *mx;
    int before;        /* 1: mtasts_engine_check_mx_dane (before connecting) */
    const char *chain; /* after the handshake: a file of the fixture dir; NULL: no TLS */
    mtasts_verdict verdict;
    mtasts_reason reason;
    uint32_t applies, tls_required, tlsa_records, usable_records;
    mtasts_decided_by decided_by;
};

static const struct dane_expect dane_cases[] = {
    /* MTA-STS alone: an enforce policy listing the MX requires TLS; no policy requires nothing */
    {"enforce.test", "mx.enforce.test", 1, NULL, MTASTS_VERDICT_PASS, MTASTS_REASON_NONE, 0, 1, 0, 0,
     MTASTS_DECIDED_BY_MTA_STS},
    {"enforce.test", "mx.enforce.test", 0, "mx-enforce.der", MTASTS_VERDICT_PASS, MTASTS_REASON_NONE,
     0, 1, 0, 0, MTASTS_DECIDED_BY_MTA_STS},
    {"nopolicy.test", "mx.nopolicy.test", 1, NULL, MTASTS_VERDICT_NO_POLICY, MTASTS_REASON_NONE, 0,
     0, 0, 0, MTASTS_DECIDED_BY_NONE},
    /* DANE-EE 3 1 1: before connecting TLS is mandatory; after, the key decides */
    {"dane.test", "mx.dane.test", 1, NULL, MTASTS_VERDICT_PASS, MTASTS_REASON_NONE, 1, 1, 1, 1,
     MTASTS_DECIDED_BY_DANE},
    {"dane.test", "mx.dane.test", 0, "mx-dane.der", MTASTS_VERDICT_PASS, MTASTS_REASON_NONE, 1, 1, 1,
     1, MTASTS_DECIDED_BY_DANE},
    {"dane.test", "mx.dane.test", 0, "mx-dane.pem", MTASTS_VERDICT_PASS, MTASTS_REASON_NONE, 1, 1, 1,
     1, MTASTS_DECIDED_BY_DANE},
    {"dane.test", "mx.dane.test", 0, "mx-dane-selfsigned.der", MTASTS_VERDICT_FAIL_TESTING,
     MTASTS_REASON_CERTIFICATE_NOT_TRUSTED, 1, 1, 1, 1, MTASTS_DECIDED_BY_DANE},
    {"dane.test", "mx.dane.test", 0, "mx-enforce.pem", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_TLSA_INVALID, 1, 1, 1, 1, MTASTS_DECIDED_BY_DANE},
    {"dane.test", "mx.dane.test", 0, NULL, MTASTS_VERDICT_FAIL_ENFORCE, MTASTS_REASON_DANE_REQUIRED,
     1, 1, 1, 1, MTASTS_DECIDED_BY_DANE},
    /* a mismatch under a testing policy: still enforced */
    {"dane-mismatch.test", "mx.dane-mismatch.test", 1, NULL, MTASTS_VERDICT_PASS, MTASTS_REASON_NONE,
     1, 1, 1, 1, MTASTS_DECIDED_BY_DANE},
    {"dane-mismatch.test", "mx.dane-mismatch.test", 0, "mx-dane-mismatch.pem",
     MTASTS_VERDICT_FAIL_ENFORCE, MTASTS_REASON_TLSA_INVALID, 1, 1, 1, 1, MTASTS_DECIDED_BY_DANE},
    /* a bogus TLSA RRset: refused before connecting and after, with no records to count */
    {"dane-bogus.test", "mx.dane-bogus.test", 1, NULL, MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_DNSSEC_INVALID, 1, 1, 0, 0, MTASTS_DECIDED_BY_DANE},
    {"dane-bogus.test", "mx.dane-bogus.test", 0, "mx-dane.der", MTASTS_VERDICT_FAIL_ENFORCE,
     MTASTS_REASON_DNSSEC_INVALID, 1, 1, 0, 0, MTASTS_DECIDED_BY_DANE},
};
#define N_DANE_CASES (sizeof dane_cases / sizeof dane_cases[0])

static void check_dane_case(const mtasts_engine *engine, const struct dane_expect *c) {
    const struct chain *ch = c->chain ? chain(c->chain) : NULL;
    mtasts_result r;
    mtasts_dane d;
    memset(&r, SENTINEL, sizeof r);
    memset(&d, SENTINEL, sizeof d);
    d.size = sizeof d;
    mtasts_status s =
        c->before ? mtasts_engine_check_mx_dane(engine, c->domain, c->mx, &r, &d)
                  : mtasts_engine_check_dane(engine, c->domain, c->mx, ch ? ch->data : NULL,
                                             ch ? ch->len : 0, &r, &d);
    char what[300], m[900];
    snprintf(what, sizeof what, "%s / %s / %s", c->domain, c->mx,
             c->before ? "before connecting" : c->chain ? c->chain : "no TLS");
    if (s != MTASTS_STATUS_OK) {
        char e[512] = "";
        last_error(e, sizeof e);
        snprintf(m, sizeof m, "%s: status %s (%s)", what, mtasts_status_str(s), e);
        record(0, __FILE__, __LINE__, "mtasts_engine_check(_mx)_dane", m);
        return;
    }
    int ok = r.verdict == c->verdict && r.reason == c->reason && d.size == sizeof d &&
             d.applies == c->applies && d.tls_required == c->tls_required &&
             d.tlsa_records == c->tlsa_records && d.usable_records == c->usable_records &&
             d.decided_by == c->decided_by && memchr(r.detail, 0, sizeof r.detail) &&
             detail_fits(c->reason, r.detail);
    snprintf(m, sizeof m,
             "%s: got %s/%s applies %" PRIu32 " tls_required %" PRIu32 " records %" PRIu32
             " usable %" PRIu32 " decided_by %" PRIu32 " (detail \"%.255s\"), want %s/%s applies %" PRIu32
             " tls_required %" PRIu32 " records %" PRIu32 " usable %" PRIu32 " decided_by %" PRIu32,
             what, mtasts_verdict_str(r.verdict), mtasts_reason_str(r.reason), d.applies,
             d.tls_required, d.tlsa_records, d.usable_records, (uint32_t)d.decided_by, r.detail,
             mtasts_verdict_str(c->verdict), mtasts_reason_str(c->reason), c->applies,
             c->tls_required, c->tlsa_records, c->usable_records, (uint32_t)c->decided_by);
    record(ok, __FILE__, __LINE__, "mtasts_engine_check(_mx)_dane", ok ? NULL : m);
}

static void test_dane_calls(const mtasts_engine *engine) {
    section("mtasts_engine_check_dane / _check_mx_dane against the signed fixture zones");
    CHECK_EQ(MTASTS_DECIDED_BY_NONE, 0);
    CHECK_EQ(MTASTS_DECIDED_BY_MTA_STS, 1);
    CHECK_EQ(MTASTS_DECIDED_BY_DANE, 2);
    /* Twice: the second pass is answered from the policy and TLSA caches and must agree. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < N_DANE_CASES; i++) {
            check_dane_case(engine, &dane_cases[i]);
        }
    }
    /* The bogus host's detail says what did not validate. */
    mtasts_result r;
    mtasts_dane d;
    memset(&d, 0, sizeof d);
    d.size = sizeof d;
    CHECK_STATUS(mtasts_engine_check_mx_dane(engine, "dane-bogus.test", "mx.dane-bogus.test", &r, &d),
                 MTASTS_STATUS_OK);
    CHECK(r.detail[0] != 0);

    /* A size from an older or broken caller is refused, and nothing is written. */
    mtasts_dane small;
    memset(&small, 0, sizeof small);
    small.size = sizeof small - 1;
    r.verdict = (mtasts_verdict)99;
    CHECK_STATUS(mtasts_engine_check_mx_dane(engine, "dane.test", "mx.dane.test", &r, &small),
                 MTASTS_STATUS_INVALID_ARGUMENT);
    CHECK_EQ(r.verdict, 99);
    CHECK_EQ(small.applies, 0);
    CHECK_EQ(small.tlsa_records, 0);
    CHECK_STATUS(mtasts_engine_check_mx_dane(engine, "dane.test", "mx.dane.test", &r, NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_check_dane(NULL, "dane.test", "mx.dane.test", NULL, 0, &r, &d),
                 MTASTS_STATUS_NULL_ARGUMENT);
}

/* A store that cannot be opened is visible to the caller, and on_store_error = "tempfail" holds
 * mail for a domain without a policy (README: "When a check can say no-policy or error"). */
static void test_store_state(const mtasts_engine *fixture_engine) {
    section("store state and on_store_error");
    mtasts_store_state state = (mtasts_store_state)99;
    char detail[512];
    size_t n = 0;
    /* The fixture's engine keeps policies in memory only. */
    CHECK_STATUS(mtasts_engine_store_state(fixture_engine, &state, detail, sizeof detail, &n),
                 MTASTS_STATUS_OK);
    CHECK_EQ(state, MTASTS_STORE_NONE);
    CHECK_EQ(n, 0);
    CHECK_STATUS(mtasts_engine_store_state(fixture_engine, &state, NULL, 0, NULL), MTASTS_STATUS_OK);
    CHECK_STATUS(mtasts_default_store_state(&state, NULL, 0, NULL), MTASTS_STATUS_OK);
    CHECK_EQ(state, MTASTS_STORE_NONE);
    CHECK_STATUS(mtasts_engine_store_state(NULL, &state, NULL, 0, NULL), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_store_state(fixture_engine, NULL, NULL, 0, NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);

    char dir[] = "/tmp/mtasts-test-store-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char store[256], config[256], text[1024];
    snprintf(store, sizeof store, "%s/corrupt.sqlite", dir);
    snprintf(config, sizeof config, "%s/mtasts.toml", dir);
    FILE *f = fopen(store, "w");
    CHECK(f != NULL);
    if (!f) return;
    for (int i = 0; i < 40; i++) fputs("not a database, just text ", f);
    fclose(f);
    snprintf(text, sizeof text,
             "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\ndnssec = \"off\"\n[cache]\npath = \"%s\"\n"
             "[engine]\non_store_error = \"tempfail\"\n",
             store);
    f = fopen(config, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);

    mtasts_engine *e = NULL;
    CHECK_STATUS(mtasts_engine_new(config, &e), MTASTS_STATUS_OK);
    if (e) {
        /* Too small a buffer: the needed size, and nothing else written. */
        state = (mtasts_store_state)99;
        CHECK_STATUS(mtasts_engine_store_state(e, &state, detail, 4, &n), MTASTS_STATUS_BUFFER_TOO_SMALL);
        CHECK_EQ(state, 99);
        CHECK(n > 4);
        CHECK_STATUS(mtasts_engine_store_state(e, &state, detail, sizeof detail, &n), MTASTS_STATUS_OK);
        CHECK_EQ(state, MTASTS_STORE_UNAVAILABLE);
        CHECK(strstr(detail, "corrupt.sqlite") != NULL);
        mtasts_result r;
        CHECK_STATUS(mtasts_engine_check_mx(e, "nopolicy.test", "mx.nopolicy.test", &r), MTASTS_STATUS_OK);
        CHECK_EQ(r.verdict, MTASTS_VERDICT_FAIL_ENFORCE);
        CHECK_EQ(r.reason, MTASTS_REASON_STORE_UNAVAILABLE);
        CHECK(strstr(r.detail, "store is unavailable") != NULL);
        mtasts_engine_free(e);
    }
    unlink(config);
    unlink(store);
    rmdir(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* The fixture: handle API                                                                    */

static void test_engine_checks(const mtasts_engine *engine) {
    section("mtasts_engine_check against the fixture");
    for (size_t i = 0; i < N_CASES; i++) {
        check_case(engine, &cases[i]);
    }
    /* Twice: the second pass is answered from the cache and must agree. */
    for (size_t i = 0; i < N_CASES; i++) {
        check_case(engine, &cases[i]);
    }
    /* A policy host that takes a second to answer. */
    const struct expect slow = {"slow.test", "mx.enforce.test", "mx-enforce.der",
                                MTASTS_VERDICT_PASS, MTASTS_REASON_NONE, MTASTS_MODE_ENFORCE, "s1"};
    check_case(engine, &slow);

    section("mtasts_engine_check_mx against the fixture");
    check_mx_case(engine, "enforce.test", "mx.enforce.test", MTASTS_VERDICT_PASS,
                  MTASTS_REASON_NONE, MTASTS_MODE_ENFORCE);
    check_mx_case(engine, "enforce.test", "a.backup.enforce.test", MTASTS_VERDICT_PASS,
                  MTASTS_REASON_NONE, MTASTS_MODE_ENFORCE);
    check_mx_case(engine, "enforce.test", "a.b.backup.enforce.test", MTASTS_VERDICT_FAIL_ENFORCE,
                  MTASTS_REASON_MX_MISMATCH, MTASTS_MODE_ENFORCE); /* one label only */
    check_mx_case(engine, "enforce.test", "mx.other.test", MTASTS_VERDICT_FAIL_ENFORCE,
                  MTASTS_REASON_MX_MISMATCH, MTASTS_MODE_ENFORCE);
    check_mx_case(engine, "enforce.test", "192.0.2.1", MTASTS_VERDICT_FAIL_ENFORCE,
                  MTASTS_REASON_MX_MISMATCH, MTASTS_MODE_ENFORCE);
    check_mx_case(engine, "testing.test", "mx.testing.test", MTASTS_VERDICT_PASS,
                  MTASTS_REASON_NONE, MTASTS_MODE_TESTING);
    check_mx_case(engine, "testing.test", "mx.other.test", MTASTS_VERDICT_FAIL_TESTING,
                  MTASTS_REASON_MX_MISMATCH, MTASTS_MODE_TESTING);
    check_mx_case(engine, "none.test", "mx.other.test", MTASTS_VERDICT_NO_POLICY,
                  MTASTS_REASON_NONE, MTASTS_MODE_NONE);
    check_mx_case(engine, "nopolicy.test", "mx.other.test", MTASTS_VERDICT_NO_POLICY,
                  MTASTS_REASON_NONE, MTASTS_MODE_NO_POLICY);
    check_mx_case(engine, "broken.test", "mx.other.test", MTASTS_VERDICT_NO_POLICY,
                  MTASTS_REASON_STS_POLICY_FETCH_ERROR, MTASTS_MODE_NO_POLICY);

    /* A detail longer than the result's 256 bytes is cut, and still NUL-terminated. */
    char longest[254];
    size_t at = 0;
    for (int label = 0; label < 4; label++) {
        size_t n = label < 3 ? 63 : 48;
        memset(longest + at, 'a' + label, n);
        at += n;
        longest[at++] = '.';
    }
    memcpy(longest + at, "test", 5); /* 247 octets: a valid host name */
    mtasts_result r;
    memset(&r, SENTINEL, sizeof r);
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", longest, &r), MTASTS_STATUS_OK);
    CHECK_EQ(r.reason, MTASTS_REASON_MX_MISMATCH);
    CHECK(memchr(r.detail, 0, sizeof r.detail) != NULL);
    CHECK_EQ(strnlen(r.detail, sizeof r.detail), sizeof r.detail - 1);
    CHECK(strncmp(r.detail, longest, 200) == 0);
}

static void test_policy(const char *cfg) {
    section("mtasts_engine_policy and the policy accessors");
    mtasts_engine *engine = NULL;
    CHECK_STATUS(mtasts_engine_new(cfg, &engine), MTASTS_STATUS_OK);
    if (!engine) {
        return;
    }
    time_t before = time(NULL);
    mtasts_policy *p = NULL;
    CHECK_STATUS(mtasts_engine_policy(engine, "enforce.test", &p), MTASTS_STATUS_OK);
    time_t after = time(NULL);
    CHECK(p != NULL);
    /* The policy may outlive its engine. */
    mtasts_engine_free(engine);
    engine = NULL;
    if (p) {
        CHECK_EQ(mtasts_policy_mode(p), MTASTS_MODE_ENFORCE);
        CHECK_EQ(mtasts_policy_max_age(p), 604800);
        uint64_t fetched = mtasts_policy_fetched_at(p), expires = mtasts_policy_expires_at(p);
        CHECK(fetched >= (uint64_t)before && fetched <= (uint64_t)after);
        CHECK_EQ(expires - fetched, 604800);
        CHECK_EQ(mtasts_policy_mx_count(p), 2);

        char buf[300];
        size_t n = 12345;
        CHECK_STATUS(mtasts_policy_id(p, buf, sizeof buf, &n), MTASTS_STATUS_OK);
        CHECK_BUF(buf, "e1");
        CHECK_EQ(n, 2);
        /* exact fit, one short, len 0 */
        memset(buf, SENTINEL, sizeof buf);
        n = 12345;
        CHECK_STATUS(mtasts_policy_id(p, buf, 3, &n), MTASTS_STATUS_OK);
        CHECK_BUF(buf, "e1");
        CHECK_EQ(n, 2);
        CHECK(all_bytes(buf + 3, sizeof buf - 3, SENTINEL));
        memset(buf, SENTINEL, sizeof buf);
        n = 12345;
        CHECK_STATUS(mtasts_policy_id(p, buf, 2, &n), MTASTS_STATUS_BUFFER_TOO_SMALL);
        CHECK_EQ(n, 2);
        CHECK(all_bytes(buf, sizeof buf, SENTINEL));
        n = 12345;
        CHECK_STATUS(mtasts_policy_id(p, buf, 0, &n), MTASTS_STATUS_BUFFER_TOO_SMALL);
        CHECK_EQ(n, 2);
        CHECK(all_bytes(buf, sizeof buf, SENTINEL));
        CHECK_STATUS(mtasts_policy_id(p, buf, 1, NULL), MTASTS_STATUS_BUFFER_TOO_SMALL);
        CHECK(all_bytes(buf, sizeof buf, SENTINEL));

        static const char *const patterns[] = {"mx.enforce.test", "*.backup.enforce.test"};
        for (size_t i = 0; i < 2; i++) {
            size_t need = strlen(patterns[i]);
            memset(buf, SENTINEL, sizeof buf);
            n = 12345;
            CHECK_STATUS(mtasts_policy_mx(p, i, buf, sizeof buf, &n), MTASTS_STATUS_OK);
            CHECK_BUF(buf, patterns[i]);
            CHECK_EQ(n, need);
            memset(buf, SENTINEL, sizeof buf);
            n = 12345;
            CHECK_STATUS(mtasts_policy_mx(p, i, buf, need + 1, &n), MTASTS_STATUS_OK);
            CHECK_BUF(buf, patterns[i]);
            CHECK_EQ(n, need);
            CHECK(all_bytes(buf + need + 1, sizeof buf - need - 1, SENTINEL));
            memset(buf, SENTINEL, sizeof buf);
            n = 12345;
            CHECK_STATUS(mtasts_policy_mx(p, i, buf, need, &n), MTASTS_STATUS_BUFFER_TOO_SMALL);
            CHECK_EQ(n, need);
            CHECK(all_bytes(buf, sizeof buf, SENTINEL));
            n = 12345;
            CHECK_STATUS(mtasts_policy_mx(p, i, buf, 0, &n), MTASTS_STATUS_BUFFER_TOO_SMALL);
            CHECK_EQ(n, need);
            CHECK(all_bytes(buf, sizeof buf, SENTINEL));
        }
        /* Out of range: an error, nothing written. */
        const size_t bad_index[] = {2, 3, 1000, SIZE_MAX};
        for (size_t i = 0; i < sizeof bad_index / sizeof bad_index[0]; i++) {
            memset(buf, SENTINEL, sizeof buf);
            n = 12345;
            CHECK_STATUS(mtasts_policy_mx(p, bad_index[i], buf, sizeof buf, &n),
                         MTASTS_STATUS_OUT_OF_RANGE);
            CHECK_EQ(n, 12345);
            CHECK(all_bytes(buf, sizeof buf, SENTINEL));
        }
        mtasts_policy_free(p);
    }

    CHECK_STATUS(mtasts_engine_new(cfg, &engine), MTASTS_STATUS_OK);
    if (!engine) {
        return;
    }
    p = NULL;
    CHECK_STATUS(mtasts_engine_policy(engine, "testing.test", &p), MTASTS_STATUS_OK);
    if (p) {
        CHECK_EQ(mtasts_policy_mode(p), MTASTS_MODE_TESTING);
        CHECK_EQ(mtasts_policy_mx_count(p), 1);
        char buf[64];
        CHECK_STATUS(mtasts_policy_id(p, buf, sizeof buf, NULL), MTASTS_STATUS_OK);
        CHECK_BUF(buf, "t1");
        mtasts_policy_free(p);
    }
    /* A mode: none policy is a policy like any other. */
    p = NULL;
    CHECK_STATUS(mtasts_engine_policy(engine, "none.test", &p), MTASTS_STATUS_OK);
    if (p) {
        CHECK_EQ(mtasts_policy_mode(p), MTASTS_MODE_NONE);
        CHECK_EQ(mtasts_policy_mx_count(p), 0);
        char buf[64];
        size_t n = 12345;
        CHECK_STATUS(mtasts_policy_mx(p, 0, buf, sizeof buf, &n), MTASTS_STATUS_OUT_OF_RANGE);
        CHECK_EQ(n, 12345);
        mtasts_policy_free(p);
    }
    /* No policy: NO_POLICY, and policy_out untouched. */
    static const char *const no_policy[] = {"nopolicy.test", "broken.test", "127.0.0.1",
                                            "[192.0.2.1]"};
    for (size_t i = 0; i < sizeof no_policy / sizeof no_policy[0]; i++) {
        p = (mtasts_policy *)&p;
        CHECK_STATUS(mtasts_engine_policy(engine, no_policy[i], &p), MTASTS_STATUS_NO_POLICY);
        CHECK(p == (mtasts_policy *)&p);
    }
    /* broken.test says why there is none. */
    p = (mtasts_policy *)&p;
    CHECK_STATUS(mtasts_engine_policy(engine, "broken.test", &p), MTASTS_STATUS_NO_POLICY);
    CHECK_LAST_ERROR_HAS("404");
    mtasts_engine_free(engine);
}

/* ------------------------------------------------------------------------------------------ */
/* The default engine                                                                         */

static void test_default_engine(void) {
    section("mtasts_check (default engine) against the fixture");
    for (size_t i = 0; i < N_CASES; i++) {
        check_case_default(&cases[i]);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Threads                                                                                    */

#define N_THREADS 8

static int thread_iterations(void) {
    const char *s = getenv("MTASTS_TEST_ITERATIONS");
    int n = s ? atoi(s) : 0;
    return n > 0 ? n : 300;
}

struct thread_arg {
    int index;
    const mtasts_engine *engine;
    pthread_barrier_t *barrier;
    unsigned long wrong;
};

static void *thread_main(void *p) {
    struct thread_arg *arg = p;
    char path[64], msg[256];

    /* Each thread has its own last error: set one, wait until every thread has, read it back. */
    snprintf(path, sizeof path, "/nonexistent/thread-%d.toml", arg->index);
    mtasts_engine *e = NULL;
    if (mtasts_engine_new(path, &e) != MTASTS_STATUS_CONFIG || e != NULL) {
        arg->wrong++;
    }
    pthread_barrier_wait(arg->barrier);
    last_error(msg, sizeof msg);
    if (!record(strstr(msg, path) != NULL, __FILE__, __LINE__, "per-thread last error", msg)) {
        arg->wrong++;
    }
    pthread_barrier_wait(arg->barrier);

    /* Then many checks at once, spread over the domains, both APIs. */
    int iterations = thread_iterations();
    for (int i = 0; i < iterations; i++) {
        const struct expect *c = &cases[(size_t)(i * 7 + arg->index) % N_CASES];
        int ok = (i % 2) ? check_case(arg->engine, c) : check_case_default(c);
        if (!ok) {
            arg->wrong++;
        }
    }
    return NULL;
}

static void test_threads(const mtasts_engine *engine) {
    int iterations = thread_iterations();
    char title[128];
    snprintf(title, sizeof title, "%d threads x %d checks at once", N_THREADS, iterations);
    section(title);
    pthread_t threads[N_THREADS];
    struct thread_arg args[N_THREADS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, N_THREADS);
    int started = 0;
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (struct thread_arg){i, engine, &barrier, 0};
        if (!CHECK(pthread_create(&threads[i], NULL, thread_main, &args[i]) == 0)) {
            /* A missing thread would hang the barrier: give up now. */
            fprintf(stderr, "cannot start threads\n");
            exit(1);
        }
        started++;
    }
    unsigned long wrong = 0;
    for (int i = 0; i < started; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        wrong += args[i].wrong;
    }
    pthread_barrier_destroy(&barrier);
    CHECK_EQ(wrong, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* fork()                                                                                     */

/* Runs `body` in a child and checks that it exits 0. */
static void in_child(const char *what, void (*body)(const mtasts_engine *),
                     const mtasts_engine *engine) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        n_shown = 0; /* the child shows its own failures */
        unsigned long before = failures();
        body(engine);
        fflush(stdout);
        fflush(stderr);
        _exit(failures() == before ? 0 : 1);
    }
    if (pid > 0) {
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        char m[200];
        snprintf(m, sizeof m, "%s: child status %d", what, status);
        record(WIFEXITED(status) && WEXITSTATUS(status) == 0, __FILE__, __LINE__,
               "forked child succeeded", m);
    }
}

static void child_checks(const mtasts_engine *engine) {
    /* The default engine is rebuilt in the child (the parent's cache is not carried over). */
    for (size_t i = 0; i < N_CASES; i++) {
        check_case_default(&cases[i]);
    }
    /* The parent's engine: no other thread was inside a call at the fork. */
    for (size_t i = 0; i < N_CASES; i++) {
        check_case(engine, &cases[i]);
    }
    /* And a new engine of the child's own. */
    mtasts_engine *mine = NULL;
    CHECK_STATUS(mtasts_engine_new(config_path, &mine), MTASTS_STATUS_OK);
    if (mine) {
        check_case(mine, &cases[0]);
        check_mx_case(mine, "enforce.test", "mx.other.test", MTASTS_VERDICT_FAIL_ENFORCE,
                      MTASTS_REASON_MX_MISMATCH, MTASTS_MODE_ENFORCE);
        mtasts_engine_free(mine);
    }
}

static void child_bad_config(const mtasts_engine *engine) {
    (void)engine;
    /* A child builds its own default engine from the environment it has at its first call. */
    const char *missing = "/nonexistent/child/mtasts.toml";
    setenv("MTASTS_CONFIG", missing, 1);
    CHECK_EQ(mtasts_check("enforce.test", "mx.enforce.test", NULL, 0), MTASTS_VERDICT_ERROR);
    CHECK_LAST_ERROR_HAS(missing);
    CHECK_EQ(mtasts_check("nopolicy.test", "mx.enforce.test", NULL, 0), MTASTS_VERDICT_ERROR);
}

/* TLSRPT recording: arguments checked, outcomes accepted, counts flushed. */
static void test_record(const mtasts_engine *engine) {
    CHECK_STATUS(mtasts_engine_record(NULL, "enforce.test", "mx.enforce.test", MTASTS_REASON_NONE, NULL, NULL, NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_record(engine, NULL, "mx.enforce.test", MTASTS_REASON_NONE, NULL, NULL, NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_record(engine, "enforce.test", NULL, MTASTS_REASON_NONE, NULL, NULL, NULL),
                 MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(mtasts_engine_record(engine, "enforce.test", "mx.enforce.test", 99, NULL, NULL, NULL),
                 MTASTS_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(mtasts_engine_record(engine, "enforce.test", "mx.enforce.test", MTASTS_REASON_NONE, "not-an-ip", NULL, NULL),
                 MTASTS_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(mtasts_engine_record(engine, "enforce.test", "mx.enforce.test", MTASTS_REASON_NONE, NULL, "\xff", NULL),
                 MTASTS_STATUS_INVALID_UTF8);
    CHECK_STATUS(mtasts_engine_record(engine, "bad domain", "mx.enforce.test", MTASTS_REASON_NONE, NULL, NULL, NULL),
                 MTASTS_STATUS_INVALID_DOMAIN);
    CHECK_STATUS(mtasts_engine_record(engine, "enforce.test", "mx.enforce.test", MTASTS_REASON_NONE, "192.0.2.1",
                                      "2001:db8::25", NULL),
                 MTASTS_STATUS_OK);
    CHECK_STATUS(mtasts_engine_record(engine, "enforce.test", "mx.enforce.test", MTASTS_REASON_STARTTLS_NOT_SUPPORTED,
                                      "", "", "handshake failed: protocol version"),
                 MTASTS_STATUS_OK);
    CHECK_STATUS(mtasts_record("enforce.test", "mx.enforce.test", MTASTS_REASON_NONE, NULL, NULL, NULL), MTASTS_STATUS_OK);
    CHECK_STATUS(mtasts_engine_flush(engine), MTASTS_STATUS_OK);
    CHECK_STATUS(mtasts_engine_flush(NULL), MTASTS_STATUS_NULL_ARGUMENT);
    CHECK_EQ(MTASTS_STATUS_INVALID_ARGUMENT, 10);
    CHECK(strcmp(mtasts_status_str(MTASTS_STATUS_INVALID_ARGUMENT), "invalid-argument") == 0);
}

static void test_fork(const mtasts_engine *engine) {
    section("fork() after use");
    in_child("checks in a child", child_checks, engine);
    in_child("bad configuration in a child", child_bad_config, engine);
    /* The parent is unaffected. */
    for (size_t i = 0; i < N_CASES; i++) {
        check_case_default(&cases[i]);
        check_case(engine, &cases[i]);
    }
}

/* ------------------------------------------------------------------------------------------ */

/* mtasts_set_log_callback: lines come to the callback (with their level), never while a library
 * lock is held (the callback calls back into the library), and NULL sends them to stderr again. */
struct log_seen {
    int lines, decisions, max_level, reentered;
    char last[512];
};

static void on_log(void *user_data, int level, const char *line) {
    struct log_seen *seen = user_data;
    seen->lines++;
    if (level > seen->max_level) seen->max_level = level;
    if (strstr(line, "decision") && strstr(line, "domain=\"enforce.test\"") &&
        strstr(line, "verdict=\"pass\""))
        seen->decisions++;
    snprintf(seen->last, sizeof seen->last, "%s", line);
    /* Calling back into the library from the callback must not deadlock. */
    if (mtasts_set_log_callback(on_log, user_data, MTASTS_LOG_INFO) == MTASTS_STATUS_OK)
        seen->reentered++;
}

static void test_log_callback(const mtasts_engine *engine) {
    section("mtasts_set_log_callback");
    CHECK_STATUS(mtasts_set_log_callback(on_log, NULL, 5), MTASTS_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(mtasts_set_log_callback(on_log, NULL, -1), MTASTS_STATUS_INVALID_ARGUMENT);
    struct log_seen seen = {0};
    CHECK_STATUS(mtasts_set_log_callback(on_log, &seen, MTASTS_LOG_INFO), MTASTS_STATUS_OK);
    mtasts_result r;
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", "mx.enforce.test", &r), MTASTS_STATUS_OK);
    CHECK_EQ(r.verdict, MTASTS_VERDICT_PASS);
    CHECK_EQ(seen.decisions, 1);
    CHECK_EQ(seen.max_level, MTASTS_LOG_INFO);
    CHECK(seen.reentered >= 1);
    /* Above the callback's level: nothing. */
    CHECK_STATUS(mtasts_set_log_callback(on_log, &seen, MTASTS_LOG_WARN), MTASTS_STATUS_OK);
    int before = seen.lines;
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", "mx.enforce.test", &r), MTASTS_STATUS_OK);
    CHECK_EQ(seen.lines, before);
    /* Back to standard error. */
    CHECK_STATUS(mtasts_set_log_callback(NULL, NULL, MTASTS_LOG_OFF), MTASTS_STATUS_OK);
    CHECK_STATUS(mtasts_engine_check_mx(engine, "enforce.test", "mx.enforce.test", &r), MTASTS_STATUS_OK);
    CHECK_EQ(seen.lines, before);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CONFIG DIR\n", argv[0]);
        return 2;
    }
    config_path = argv[1];
    /* The default engine reads $MTASTS_CONFIG on its first use: set it before any call. */
    if (setenv("MTASTS_CONFIG", config_path, 1) != 0) {
        perror("setenv");
        return 2;
    }
    load_chains(argv[2]);

    test_last_error(); /* first: nothing has failed in this thread yet */
    test_version();
    test_enums();
    test_last_error_retry();
    test_config_errors();

    mtasts_engine *engine = NULL;
    CHECK_STATUS(mtasts_engine_new(config_path, &engine), MTASTS_STATUS_OK);
    if (!engine) {
        fprintf(stderr, "cannot create an engine from %s; giving up\n", config_path);
        return 1;
    }
    test_engine_checks(engine);
    test_store_state(engine);
    test_dane_calls(engine);
    test_log_callback(engine);
    test_overrides();

    mtasts_policy *policy = NULL;
    CHECK_STATUS(mtasts_engine_policy(engine, "enforce.test", &policy), MTASTS_STATUS_OK);
    test_null_arguments(engine, policy);
    mtasts_policy_free(policy);

    test_bad_strings(engine);
    test_policy(config_path);
    test_default_engine();
    test_threads(engine);
    test_record(engine);
    test_fork(engine);

    mtasts_engine_free(engine);
    free_chains();

    printf("%lu passed, %lu failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
