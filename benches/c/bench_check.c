/*
 * mtasts_check and mtasts_engine_check_mx on the cached path, from C: median nanoseconds per
 * call over batches. Needs the fixtures' configuration (a policy for enforce.test).
 *
 *   bash benches/c/run.sh
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

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static unsigned char buf[65536];
    *len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: bench_check CONFIG CHAIN.der\n");
        return 2;
    }
    size_t chain_len = 0;
    const unsigned char *chain = read_file(argv[2], &chain_len);
    if (!chain || chain_len == 0) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 2;
    }
    setenv("MTASTS_CONFIG", argv[1], 1);
    if (mtasts_check("enforce.test", "mx.enforce.test", NULL, 0) != MTASTS_VERDICT_FAIL_ENFORCE) {
        fprintf(stderr, "warm-up check gave an unexpected verdict\n");
        return 1;
    }
    mtasts_engine *engine = NULL;
    if (mtasts_engine_new(argv[1], &engine) != MTASTS_STATUS_OK) {
        fprintf(stderr, "mtasts_engine_new failed\n");
        return 1;
    }
    mtasts_result r;
    mtasts_engine_check_mx(engine, "enforce.test", "mx.enforce.test", &r);

    double samples[BATCHES];
    /* mtasts_check: default engine, the MX's valid chain (memoised after the first call). */
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        for (int i = 0; i < CALLS; i++) {
            if (mtasts_check("enforce.test", "mx.enforce.test", chain, chain_len) != MTASTS_VERDICT_PASS) return 1;
        }
        samples[b] = (now_ns() - t0) / CALLS;
    }
    qsort(samples, BATCHES, sizeof samples[0], cmp);
    printf("mtasts_check (cached, valid DER chain: pass): median %.0f ns/call (min %.0f, max %.0f)\n",
           samples[BATCHES / 2], samples[0], samples[BATCHES - 1]);
    /* mtasts_check: default engine, MX name and no certificate (STARTTLS not negotiated). */
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        for (int i = 0; i < CALLS; i++) {
            if (mtasts_check("enforce.test", "mx.enforce.test", NULL, 0) != MTASTS_VERDICT_FAIL_ENFORCE) return 1;
        }
        samples[b] = (now_ns() - t0) / CALLS;
    }
    qsort(samples, BATCHES, sizeof samples[0], cmp);
    printf("mtasts_check (cached, no certificate): median %.0f ns/call (min %.0f, max %.0f)\n",
           samples[BATCHES / 2], samples[0], samples[BATCHES - 1]);
    for (int b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        for (int i = 0; i < CALLS; i++) {
            mtasts_engine_check_mx(engine, "enforce.test", "mx.enforce.test", &r);
            if (r.verdict != MTASTS_VERDICT_PASS) return 1;
        }
        samples[b] = (now_ns() - t0) / CALLS;
    }
    qsort(samples, BATCHES, sizeof samples[0], cmp);
    printf("mtasts_engine_check_mx (cached): median %.0f ns/call (min %.0f, max %.0f)\n",
           samples[BATCHES / 2], samples[0], samples[BATCHES - 1]);
    mtasts_engine_free(engine);
    return 0;
}
