/*
 * The cached checks from C: median nanoseconds per call over batches, MTA-STS alone and with
 * DANE. Needs the fixture's directory (`mtasts-fixture DIR`): its mtasts.toml (signed zones,
 * dnssec = "validate"), a policy for enforce.test (no TLSA records for its MX) and for
 * dane.test (mx.dane.test has a DNSSEC-secure DANE-EE 3 1 1 record matching mx-dane.der).
 *
 *   bash benches/c/run.sh
 *
 * Every call's verdict is checked; the program stops at the first unexpected one. The cases run
 * batch by batch in turn (one batch of each, then again), so that a busy spell of the shared
 * machine falls on all of them alike and the DANE figures can be set against the MTA-STS ones
 * of the same run.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mtasts.h"

#define BATCHES 31
#define CALLS 100000

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct chain {
    unsigned char data[65536];
    size_t len;
};

static int read_chain(const char *dir, const char *name, struct chain *out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    out->len = fread(out->data, 1, sizeof out->data, f);
    fclose(f);
    if (out->len == 0 || out->len == sizeof out->data) {
        fprintf(stderr, "cannot read %s\n", path);
        return -1;
    }
    return 0;
}

static struct chain enforce_chain, dane_chain;
static mtasts_engine *engine;     /* dnssec = "validate" */
static mtasts_engine *engine_off; /* dnssec = "off": no DANE at all */

/* One batch of each case: returns 0 when every verdict was the expected one. */

static int default_enforce_chain(void) {
    for (int i = 0; i < CALLS; i++) {
        if (mtasts_check("enforce.test", "mx.enforce.test", enforce_chain.data, enforce_chain.len) !=
            MTASTS_VERDICT_PASS)
            return -1;
    }
    return 0;
}

static int default_enforce_no_cert(void) {
    for (int i = 0; i < CALLS; i++) {
        if (mtasts_check("enforce.test", "mx.enforce.test", NULL, 0) != MTASTS_VERDICT_FAIL_ENFORCE)
            return -1;
    }
    return 0;
}

static int engine_enforce_check_mx(void) {
    mtasts_result r;
    for (int i = 0; i < CALLS; i++) {
        mtasts_engine_check_mx(engine, "enforce.test", "mx.enforce.test", &r);
        if (r.verdict != MTASTS_VERDICT_PASS) return -1;
    }
    return 0;
}

static int engine_off_check_mx(void) {
    mtasts_result r;
    for (int i = 0; i < CALLS; i++) {
        mtasts_engine_check_mx(engine_off, "enforce.test", "mx.enforce.test", &r);
        if (r.verdict != MTASTS_VERDICT_PASS) return -1;
    }
    return 0;
}

static int engine_off_check(void) {
    mtasts_result r;
    for (int i = 0; i < CALLS; i++) {
        if (mtasts_engine_check(engine_off, "enforce.test", "mx.enforce.test", enforce_chain.data,
                                enforce_chain.len, &r) != MTASTS_STATUS_OK ||
            r.verdict != MTASTS_VERDICT_PASS)
            return -1;
    }
    return 0;
}

static int default_dane_chain(void) {
    for (int i = 0; i < CALLS; i++) {
        if (mtasts_check("dane.test", "mx.dane.test", dane_chain.data, dane_chain.len) != MTASTS_VERDICT_PASS)
            return -1;
    }
    return 0;
}

static int engine_enforce_check(void) {
    mtasts_result r;
    for (int i = 0; i < CALLS; i++) {
        if (mtasts_engine_check(engine, "enforce.test", "mx.enforce.test", enforce_chain.data, enforce_chain.len,
                                &r) != MTASTS_STATUS_OK ||
            r.verdict != MTASTS_VERDICT_PASS)
            return -1;
    }
    return 0;
}

static int engine_dane_check_dane(void) {
    mtasts_result r;
    mtasts_dane d;
    for (int i = 0; i < CALLS; i++) {
        d.size = sizeof d;
        if (mtasts_engine_check_dane(engine, "dane.test", "mx.dane.test", dane_chain.data, dane_chain.len, &r,
                                     &d) != MTASTS_STATUS_OK ||
            r.verdict != MTASTS_VERDICT_PASS || d.decided_by != MTASTS_DECIDED_BY_DANE)
            return -1;
    }
    return 0;
}

static int engine_dane_check_mx_dane(void) {
    mtasts_result r;
    mtasts_dane d;
    for (int i = 0; i < CALLS; i++) {
        d.size = sizeof d;
        if (mtasts_engine_check_mx_dane(engine, "dane.test", "mx.dane.test", &r, &d) != MTASTS_STATUS_OK ||
            r.verdict != MTASTS_VERDICT_PASS || !d.tls_required)
            return -1;
    }
    return 0;
}

struct bench {
    const char *what;
    int (*batch)(void);
    double samples[BATCHES];
};

/* Indexes of the figures compared at the end. */
enum { OFF_CHECK, ENGINE_CHECK, DEFAULT_CHECK, DEFAULT_DANE, ENGINE_DANE };

static struct bench benches[] = {
    [OFF_CHECK] = {"mtasts_engine_check, DANE off (enforce.test, cached, valid DER chain memoised: pass)",
                   engine_off_check, {0}},
    [ENGINE_CHECK] = {"mtasts_engine_check, DANE on, MX without TLSA (enforce.test, the same: pass)",
                      engine_enforce_check, {0}},
    [DEFAULT_CHECK] = {"mtasts_check, DANE on, MX without TLSA (enforce.test, the same: pass)",
                       default_enforce_chain, {0}},
    [DEFAULT_DANE] = {"mtasts_check, DANE-EE (dane.test: policy and TLSA answer cached, DANE-EE match "
                      "memoised: pass)",
                      default_dane_chain, {0}},
    [ENGINE_DANE] = {"mtasts_engine_check_dane, DANE-EE (the same, with the mtasts_dane fields: pass by "
                     "DANE)",
                     engine_dane_check_dane, {0}},
    {"mtasts_check, DANE on, MX without TLSA (enforce.test, cached, no certificate: fail-enforce)",
     default_enforce_no_cert, {0}},
    {"mtasts_engine_check_mx, DANE off (enforce.test, cached)", engine_off_check_mx, {0}},
    {"mtasts_engine_check_mx, DANE on, MX without TLSA (enforce.test, cached)", engine_enforce_check_mx, {0}},
    {"mtasts_engine_check_mx_dane, DANE (dane.test, before connecting: TLS required)",
     engine_dane_check_mx_dane, {0}},
};
#define N_BENCHES (sizeof benches / sizeof benches[0])

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bench_check FIXTURE_DIR\n");
        return 2;
    }
    char config[4096], config_off[4096];
    snprintf(config, sizeof config, "%s/mtasts.toml", argv[1]);
    snprintf(config_off, sizeof config_off, "%s/mtasts-dane-off.toml", argv[1]);
    if (read_chain(argv[1], "mx-enforce.der", &enforce_chain) != 0 ||
        read_chain(argv[1], "mx-dane.der", &dane_chain) != 0)
        return 2;
    setenv("MTASTS_CONFIG", config, 1);
    if (mtasts_engine_new(config, &engine) != MTASTS_STATUS_OK ||
        mtasts_engine_new(config_off, &engine_off) != MTASTS_STATUS_OK) {
        fprintf(stderr, "mtasts_engine_new failed\n");
        return 1;
    }
    /* Warm-up: fills the policy and TLSA caches (DNS, DNSSEC and HTTPS happen here) and the
     * chain memos of both engines, and checks that DANE decides for dane.test. */
    mtasts_result r;
    mtasts_dane d = {.size = sizeof d};
    if (mtasts_check("enforce.test", "mx.enforce.test", NULL, 0) != MTASTS_VERDICT_FAIL_ENFORCE ||
        mtasts_check("dane.test", "mx.dane.test", dane_chain.data, dane_chain.len) != MTASTS_VERDICT_PASS ||
        mtasts_engine_check_dane(engine, "dane.test", "mx.dane.test", dane_chain.data, dane_chain.len, &r, &d) !=
            MTASTS_STATUS_OK ||
        r.verdict != MTASTS_VERDICT_PASS || d.decided_by != MTASTS_DECIDED_BY_DANE || d.usable_records != 1) {
        char e[512] = "";
        mtasts_last_error(e, sizeof e, NULL);
        fprintf(stderr, "warm-up checks gave unexpected verdicts (%s; %s)\n", mtasts_verdict_str(r.verdict), e);
        return 1;
    }
    for (size_t k = 0; k < N_BENCHES; k++) {
        if (benches[k].batch() != 0) {
            fprintf(stderr, "%s: unexpected verdict in the warm-up batch\n", benches[k].what);
            return 1;
        }
    }

    for (int b = 0; b < BATCHES; b++) {
        for (size_t k = 0; k < N_BENCHES; k++) {
            double t0 = now_ns();
            if (benches[k].batch() != 0) {
                fprintf(stderr, "%s: unexpected verdict\n", benches[k].what);
                return 1;
            }
            benches[k].samples[b] = (now_ns() - t0) / CALLS;
        }
    }
    double medians[N_BENCHES];
    printf("median ns/call over %d batches of %d calls (min, max):\n", BATCHES, CALLS);
    for (size_t k = 0; k < N_BENCHES; k++) {
        double *s = benches[k].samples;
        qsort(s, BATCHES, sizeof s[0], cmp);
        medians[k] = s[BATCHES / 2];
        printf("  %6.0f ns  (%.0f, %.0f)  %s\n", medians[k], s[0], s[BATCHES - 1], benches[k].what);
    }
    printf("the DANE-EE combined check over the MTA-STS check of an MX without TLSA, same run: "
           "mtasts_check %.2fx, mtasts_engine_check_dane / mtasts_engine_check %.2fx; "
           "over the engine without DANE: %.2fx\n",
           medians[DEFAULT_DANE] / medians[DEFAULT_CHECK], medians[ENGINE_DANE] / medians[ENGINE_CHECK],
           medians[ENGINE_DANE] / medians[OFF_CHECK]);
    mtasts_engine_free(engine);
    mtasts_engine_free(engine_off);
    return 0;
}
