/*
 * deliver.c: how a C MTA uses libmtasts to deliver one message under MTA-STS (RFC 8461) and DANE
 * for SMTP (RFC 7672).
 *
 * Copy the parts you need. The flow, for one recipient domain:
 *
 *   1. Look up the domain's MX hosts (your MTA already does this) and sort them by preference.
 *   2. Before connecting to an MX, ask mtasts_engine_check_mx_dane() whether the policy allows that
 *      host name at all, and whether TLS is mandatory for it. FAIL_ENFORCE: do not even connect;
 *      try the next MX. dane.tls_required: the MX has DNSSEC-secure TLSA records (DANE applies) or
 *      an enforce policy lists it; then never fall back to plaintext SMTP for this MX, not even
 *      when STARTTLS fails (opportunistic TLS would, and an attacker who strips STARTTLS would win).
 *   3. Connect, EHLO, STARTTLS. After the TLS handshake (or after STARTTLS failed or was not
 *      offered) pass the certificate chain the MX presented to mtasts_engine_check_dane() and act
 *      on the verdict: PASS, NO_POLICY, FAIL_TESTING: deliver; FAIL_ENFORCE: 4.7.5, try the next
 *      MX. Where DANE applies it decides (dane.decided_by == MTASTS_DECIDED_BY_DANE), whatever the
 *      MTA-STS mode: the chain is matched against the TLSA records, and every DANE failure is
 *      FAIL_ENFORCE (tlsa-invalid, dnssec-invalid, dane-required).
 *   4. If no MX could be used: keep the message queued (a temporary failure). Neither MTA-STS nor
 *      DANE ever makes a message bounce.
 *
 * The engine does DANE when its configuration has [dns] dnssec = "validate" (the default) or
 * "trust-ad"; with "off", the _dane calls say that DANE applies to no MX and MTA-STS decides.
 * mtasts_engine_check_mx() and mtasts_engine_check() give the same verdicts without the DANE
 * details.
 *
 * This program does not speak SMTP. It stands in a certificate chain read from a file for the one
 * every MX would present, so that it can run against the test fixtures:
 *
 *     deliver DOMAIN CHAIN MX [MX...]
 *
 *   DOMAIN  the recipient domain (the Policy Domain)
 *   CHAIN   a file with the chain the MX presents, leaf first, PEM or concatenated DER;
 *           "-" for "STARTTLS was not offered"
 *   MX      MX host names in preference order
 *
 * The engine reads its configuration from $MTASTS_CONFIG (unset: the built-in defaults).
 * Exit status: 0 delivered, 75 (EX_TEMPFAIL) kept in the queue, 64 usage, 1 other errors.
 *
 * Built with -DHAVE_OPENSSL (and OpenSSL's flags), it reads the chain with OpenSSL and converts it
 * with chain_to_der(), the function an OpenSSL-based MTA calls on SSL_get_peer_cert_chain().
 *
 *     cc -std=c99 -Wall -Wextra -Werror deliver.c $(pkg-config --cflags --libs mtasts)
 */

#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mtasts.h>

#ifdef HAVE_OPENSSL
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#endif

#define EXIT_DELIVERED 0
#define EXIT_TEMPFAIL 75 /* sysexits.h EX_TEMPFAIL: the message stays in the queue */
#define EXIT_USAGE 64

/* Prints the message of the last failed libmtasts call of this thread. */
static void log_mtasts_error(const char *what, mtasts_status status) {
    char message[512];
    /* 512 bytes is plenty for a log line; a longer message is simply not shown in full. */
    if (mtasts_last_error(message, sizeof message, NULL) != MTASTS_STATUS_OK) {
        snprintf(message, sizeof message, "(message too long)");
    }
    fprintf(stderr, "mtasts: %s: %s: %s\n", what, mtasts_status_str(status), message);
}

static const char *mode_name(mtasts_mode mode) {
    switch (mode) {
    case MTASTS_MODE_ENFORCE:
        return "enforce";
    case MTASTS_MODE_TESTING:
        return "testing";
    case MTASTS_MODE_NONE:
        return "none";
    default:
        return "no policy";
    }
}

/* ---------------------------------------------------------------------------------------------
 * Turning the MX's certificate chain into what libmtasts takes.
 *
 * libmtasts wants the chain exactly as the MX presented it, leaf first, either as PEM text or
 * as DER certificates one after the other. It checks it itself (RFC 8461 §4.2: a chain to a
 * trusted root, valid now, a name matching the MX host; or, where DANE applies, RFC 7672 §3: the
 * chain against the MX's TLSA records, where a DANE-EE record needs neither a trusted root nor the
 * MX name), so the MTA's own TLS library does not need to verify anything, and must not stop the
 * handshake when its own verification fails: mtasts_engine_check_dane() is what decides, and says
 * why (certificate-expired, tlsa-invalid, ...).
 */

#ifdef HAVE_OPENSSL
/*
 * The chain of an OpenSSL connection as concatenated DER, leaf first, in a malloc'd buffer:
 *
 *     STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);   // after SSL_connect()
 *     uint8_t *der; size_t der_len;
 *     if (chain_to_der(chain, &der, &der_len) == 0) {
 *         mtasts_engine_check_dane(engine, domain, mx, der, der_len, &result, &dane);
 *         free(der);
 *     }
 *
 * On the client side (an MTA sending mail is the client) SSL_get_peer_cert_chain() includes the
 * leaf as its first element, in the order the server sent the certificates. (On the server side
 * it would not include the leaf; that does not concern an MTA that sends.) The stack belongs to
 * the SSL object: do not free it. Do not use SSL_get0_verified_chain() here: it is the chain
 * OpenSSL built against its own trust store, and does not exist when OpenSSL's verification
 * failed, which is exactly when libmtasts has to say why.
 *
 * Returns 0 on success, -1 on failure (no chain, or out of memory).
 */
static int chain_to_der(STACK_OF(X509) *chain, uint8_t **out, size_t *out_len) {
    int count = chain ? sk_X509_num(chain) : 0;
    if (count <= 0) {
        return -1;
    }
    /* First the total size: i2d_X509(cert, NULL) returns the DER length without writing. */
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        int n = i2d_X509(sk_X509_value(chain, i), NULL);
        if (n <= 0) {
            return -1;
        }
        total += (size_t)n;
    }
    uint8_t *der = malloc(total);
    if (!der) {
        return -1;
    }
    /* Then each certificate, in order. i2d_X509 advances the pointer past what it wrote. */
    unsigned char *p = der;
    for (int i = 0; i < count; i++) {
        if (i2d_X509(sk_X509_value(chain, i), &p) <= 0) {
            free(der);
            return -1;
        }
    }
    *out = der;
    *out_len = total;
    return 0;
}

/* Stands in for SSL_get_peer_cert_chain(): the certificates of a PEM file, in file order. */
static STACK_OF(X509) *read_pem_chain(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        return NULL;
    }
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509 *cert;
    while (chain && (cert = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(chain, cert)) {
            X509_free(cert);
            break;
        }
    }
    fclose(f);
    return chain;
}

/* The chain the "MX" presents, via OpenSSL: PEM file -> X509 stack -> concatenated DER. */
static int load_chain(const char *path, uint8_t **out, size_t *out_len) {
    STACK_OF(X509) *chain = read_pem_chain(path);
    int rc = chain_to_der(chain, out, out_len);
    sk_X509_pop_free(chain, X509_free);
    if (rc != 0) {
        fprintf(stderr, "%s: no PEM certificates could be read\n", path);
    }
    return rc;
}

#else /* !HAVE_OPENSSL */

/*
 * Without OpenSSL the chain file is passed as it is: libmtasts detects PEM or DER by itself.
 * A GnuTLS-based MTA would concatenate the gnutls_datum_t entries of
 * gnutls_certificate_get_peers() (already DER, leaf first); a rustls-based one the
 * CertificateDer entries of peer_certificates().
 */
static int load_chain(const char *path, uint8_t **out, size_t *out_len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 8192, len = 0, n;
    uint8_t *buf = malloc(cap);
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *bigger = cap < ((size_t)1 << 24) ? realloc(buf, cap * 2) : NULL;
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf || len == 0) {
        fprintf(stderr, "%s: cannot read a certificate chain\n", path);
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = len;
    return 0;
}
#endif /* HAVE_OPENSSL */

/* ---------------------------------------------------------------------------------------------
 * The delivery loop.
 */

/* What happened with one MX. */
enum outcome { DELIVERED, TRY_NEXT };

static const char *decided_by_name(mtasts_decided_by by) {
    switch (by) {
    case MTASTS_DECIDED_BY_DANE:
        return "DANE";
    case MTASTS_DECIDED_BY_MTA_STS:
        return "MTA-STS";
    default:
        return "neither";
    }
}

/*
 * One MX: the checks before connecting, the "connection", the full check after the TLS
 * handshake, and what to do with the verdict. `chain` is NULL when STARTTLS was not offered.
 */
static enum outcome try_mx(const mtasts_engine *engine, const char *domain, const char *mx,
                           const uint8_t *chain, size_t chain_len) {
    mtasts_result r;
    /* A sized struct: set `size` before every call, so that a newer library knows which fields
     * this program was built with. */
    mtasts_dane dane;
    memset(&dane, 0, sizeof dane);
    dane.size = sizeof dane;
    mtasts_status s;

    /*
     * Before connecting: is this host name one the policy lists, and must the session use TLS?
     * This costs nothing once the policy and the MX's TLSA answer are cached, and saves a
     * connection (and a TLS handshake) to an MX that would be refused anyway. The first call for
     * a domain may look up DNS (the TLSA records of the MX, validated with DNSSEC) and fetch the
     * policy over HTTPS (bounded by the timeouts of the configuration).
     */
    int tls_required = 0;
    s = mtasts_engine_check_mx_dane(engine, domain, mx, &r, &dane);
    if (s != MTASTS_STATUS_OK) {
        /* An internal error: see the ERROR case below for why this goes on as if MTA-STS did
         * not exist. */
        log_mtasts_error(mx, s);
    } else if (r.verdict == MTASTS_VERDICT_FAIL_ENFORCE) {
        /*
         * Not one of the policy's MX hosts, or (decided by DANE) the MX's TLSA records could not
         * be validated (dnssec-invalid: bogus signatures, or the lookup failed). Do not connect.
         * Not a bounce: the next MX may do, or this one later.
         */
        printf("%s: skipped before connecting: %s%s%s (decided by %s)\n", mx,
               mtasts_reason_str(r.reason), r.detail[0] ? ": " : "", r.detail,
               decided_by_name(dane.decided_by));
        return TRY_NEXT;
    } else {
        if (r.verdict == MTASTS_VERDICT_FAIL_TESTING) {
            /* A testing policy: connect anyway, and report the failure (TLSRPT, RFC 8460). */
            printf("%s: tlsrpt: %s (policy %s)\n", mx, mtasts_reason_str(r.reason), r.policy_id);
        }
        tls_required = dane.tls_required != 0;
        if (dane.applies) {
            printf("%s: DANE applies: %u TLSA record(s), %u usable; TLS is mandatory\n", mx,
                   (unsigned)dane.tlsa_records, (unsigned)dane.usable_records);
        } else if (tls_required) {
            printf("%s: an enforce policy lists this MX; TLS is mandatory\n", mx);
        }
    }

    /*
     * Connect, EHLO, STARTTLS, TLS handshake ... here your MTA does its SMTP. With
     * tls_required, configure the session so that it never goes on in clear: if STARTTLS is not
     * offered or the handshake fails, quit and try the next MX (the call below then says
     * FAIL_ENFORCE too, with dane-required or starttls-not-supported, and counts the failure for
     * TLSRPT). Without it, a failed STARTTLS need not end the attempt: with a testing policy or
     * no policy at all the message may still be delivered (in clear, if your MTA's own settings
     * allow it). Do not let your TLS library abort the handshake when its own certificate
     * verification fails: libmtasts judges the chain (PKIX for MTA-STS, TLSA for DANE).
     */
    if (chain) {
        printf("%s: connected, TLS established\n", mx);
    } else if (tls_required) {
        printf("%s: connected, STARTTLS not offered: no plaintext fallback for this MX\n", mx);
    } else {
        printf("%s: connected, STARTTLS not offered\n", mx);
    }

    /* After the handshake: the policy, the MX name, the TLSA records and the chain together. */
    dane.size = sizeof dane;
    s = mtasts_engine_check_dane(engine, domain, mx, chain, chain_len, &r, &dane);
    if (s != MTASTS_STATUS_OK) {
        /*
         * ERROR: the call itself failed (a bad argument, or a bug caught inside the library).
         * This says nothing about the MX or the domain's policy, so deliver as an MTA without
         * MTA-STS would. Refusing would turn a library problem into a mail outage for every
         * domain, and RFC 8461 is built to fail open whenever no policy can be had. (The one
         * error a remote party can provoke, an MX name that is not a host name, was handled
         * before connecting.) Log it loudly, so that the operator notices. Still, if TLS was
         * required and not negotiated, this session must not carry the message.
         */
        log_mtasts_error(mx, s);
        if (tls_required && !chain) {
            printf("%s: MTA-STS check failed and TLS was required: try the next MX\n", mx);
            return TRY_NEXT;
        }
        printf("%s: MTA-STS check failed; deliver as without MTA-STS\n", mx);
        printf("=> deliver to %s\n", mx);
        return DELIVERED;
    }

    switch (r.verdict) {
    case MTASTS_VERDICT_PASS:
        /* A policy or DANE applies and is satisfied: the MX is authenticated. */
        if (dane.decided_by == MTASTS_DECIDED_BY_DANE) {
            printf("%s: pass (decided by DANE: the chain matches the TLSA records)\n", mx);
        } else {
            printf("%s: pass (policy %s, mode %s)\n", mx, r.policy_id, mode_name(r.mode));
        }
        printf("=> deliver to %s\n", mx);
        return DELIVERED;

    case MTASTS_VERDICT_NO_POLICY:
        /*
         * No policy, a "mode: none" policy, or the policy could not be fetched and none is
         * cached (r.reason then says why, e.g. sts-policy-fetch-error: worth a log line).
         * DANE does not apply to this MX either (it would have decided).
         */
        if (r.reason != MTASTS_REASON_NONE) {
            printf("%s: no policy could be had: %s%s%s\n", mx, mtasts_reason_str(r.reason),
                   r.detail[0] ? ": " : "", r.detail);
        }
        printf("=> deliver to %s (no MTA-STS policy)\n", mx);
        return DELIVERED;

    case MTASTS_VERDICT_FAIL_TESTING:
        /*
         * A testing policy that is not satisfied, or a DANE pass on an MX that MTA-STS fails
         * (DANE decides and delivers; the MTA-STS failure is still reported): deliver, and report
         * it (TLSRPT).
         */
        printf("%s: tlsrpt: %s (policy %s)%s%s\n", mx, mtasts_reason_str(r.reason), r.policy_id,
               r.detail[0] ? ": " : "", r.detail);
        if (dane.decided_by == MTASTS_DECIDED_BY_DANE) {
            printf("=> deliver to %s (decided by DANE; MTA-STS failure reported)\n", mx);
        } else {
            printf("=> deliver to %s (testing policy not satisfied, reported)\n", mx);
        }
        return DELIVERED;

    case MTASTS_VERDICT_FAIL_ENFORCE:
        /*
         * An enforce policy that is not satisfied, or any DANE failure (tlsa-invalid: no TLSA
         * record matches the chain; dnssec-invalid; dane-required: no TLS where DANE applies):
         * do not send the message to this MX. Quit the SMTP session, treat it as a temporary
         * failure of this MX ("4.7.5" in your logs and DSNs), and try the next MX. Never bounce
         * the message because of MTA-STS or DANE.
         */
        printf("%s: 4.7.5 temporary failure: %s (decided by %s%s%s)%s%s\n", mx,
               mtasts_reason_str(r.reason), decided_by_name(dane.decided_by),
               r.policy_id[0] ? ", policy " : "", r.policy_id, r.detail[0] ? ": " : "", r.detail);
        return TRY_NEXT;

    default:
        /* A verdict this program does not know (a newer library): be conservative. */
        printf("%s: unknown verdict %u; trying the next MX\n", mx, (unsigned)r.verdict);
        return TRY_NEXT;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s DOMAIN CHAIN|- MX [MX...]\n", argv[0]);
        return EXIT_USAGE;
    }
    const char *domain = argv[1];
    const char *chain_file = argv[2];

    /*
     * One engine for the life of the process, shared by all threads: it holds the policy cache.
     * An MTA that forks a process per delivery should create the engine in the child (or use
     * mtasts_check(), whose default engine is rebuilt in each forked child by itself).
     */
    mtasts_engine *engine = NULL;
    mtasts_status s = mtasts_engine_new(getenv("MTASTS_CONFIG"), &engine);
    if (s != MTASTS_STATUS_OK) {
        /* A broken configuration is an operator error: say so and keep the mail queued. */
        log_mtasts_error("configuration", s);
        return EXIT_TEMPFAIL;
    }

    uint8_t *chain = NULL;
    size_t chain_len = 0;
    if (strcmp(chain_file, "-") != 0 && load_chain(chain_file, &chain, &chain_len) != 0) {
        mtasts_engine_free(engine);
        return 1;
    }

    int status = EXIT_TEMPFAIL;
    for (int i = 3; i < argc; i++) {
        if (try_mx(engine, domain, argv[i], chain, chain_len) == DELIVERED) {
            status = EXIT_DELIVERED;
            break;
        }
    }
    if (status != EXIT_DELIVERED) {
        /*
         * Every MX failed: keep the message in the queue and retry later, as for any other
         * temporary failure. The policy may be fixed, or refreshed, by then (RFC 8461 §5.1).
         */
        printf("=> no usable MX for %s: keep in the queue (4.7.5), retry later\n", domain);
    }

    free(chain);
    mtasts_engine_free(engine);
    return status;
}
