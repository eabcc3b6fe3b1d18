/*
 * A process per delivery (issue 17, item 1): what one short-lived process pays for the library,
 * from exec to exit, against a baseline from the same run.
 *
 *   proc_delivery bench N LIB DOMAIN MX CHAIN [CONFIG_C]
 *                                               runs N rounds; in each, one process of each
 *                                               case (the order alternates by round), and prints
 *                                               the medians of their exec-to-exit wall times
 *   proc_delivery a LIB CHAIN                   (a) dlopen()s LIB, reads CHAIN, exits
 *   proc_delivery b LIB DOMAIN MX CHAIN         (b) the same, then one mtasts_check(DOMAIN, MX,
 *                                               CHAIN) with the default engine (MTASTS_CONFIG),
 *                                               and a normal exit(): the library's exit handler
 *                                               writes the session's TLSRPT count to the store
 *   proc_delivery c LIB CONFIG DOMAIN MX CHAIN  (c) as (b) with MTASTS_CONFIG=CONFIG: the bench
 *                                               runs it when given CONFIG_C (run.sh: the same
 *                                               configuration with ca_file = the system's bundle
 *                                               of roots plus the fixture's root)
 *
 * Both cases read the chain file, so that the difference is the library's work alone: building
 * the default engine (configuration, store, trust anchors), the check, and the exit flush. A
 * (b) process whose verdict is not MTASTS_VERDICT_PASS exits with status 3, and the bench stops.
 * The wall time is taken in the parent, from just before fork() to the return of waitpid(), so
 * it includes fork, exec, the dynamic loader and exit for both cases alike.
 *
 *   bash benches/process/run.sh
 */
#define _DEFAULT_SOURCE /* wait4 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mtasts.h"

typedef mtasts_verdict (*check_fn)(const char *, const char *, const unsigned char *, size_t);

static unsigned char chain[65536];
static size_t chain_len;

static void read_chain(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    chain_len = fread(chain, 1, sizeof chain, f);
    fclose(f);
    if (chain_len == 0 || chain_len == sizeof chain) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
}

static void *open_library(const char *lib) {
    void *handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        fprintf(stderr, "dlopen %s: %s\n", lib, dlerror());
        exit(2);
    }
    return handle;
}

static int case_a(const char *lib, const char *chain_path) {
    open_library(lib);
    read_chain(chain_path);
    exit(0);
}

static int case_b(const char *lib, const char *domain, const char *mx, const char *chain_path) {
    void *handle = open_library(lib);
    read_chain(chain_path);
    check_fn check = (check_fn)(size_t)dlsym(handle, "mtasts_check");
    if (!check) {
        fprintf(stderr, "dlsym mtasts_check: %s\n", dlerror());
        exit(2);
    }
    mtasts_verdict v = check(domain, mx, chain, chain_len);
    if (v != MTASTS_VERDICT_PASS) {
        fprintf(stderr, "verdict %d, want pass (%d)\n", (int)v, (int)MTASTS_VERDICT_PASS);
        exit(3);
    }
    exit(0);
}

static int case_c(const char *lib, const char *config, const char *domain, const char *mx,
                  const char *chain_path) {
    if (setenv("MTASTS_CONFIG", config, 1) != 0) {
        perror("setenv");
        exit(2);
    }
    return case_b(lib, domain, mx, chain_path);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Runs argv as a child; returns its wall time in microseconds, or -1 if it did not exit 0, and
 * stores its CPU time (user + system, from wait4) in *cpu. */
static double timed(char *const argv[], double *cpu) {
    double t0 = now_us();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        execv(argv[0], argv);
        perror("execv");
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid) {
        perror("wait4");
        return -1;
    }
    *cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    double t1 = now_us();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "%s %s: exit status %d\n", argv[0], argv[1], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return -1;
    }
    return t1 - t0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[(int)(q * (n - 1) + 0.5)];
}

static void report(const char *name, double *wall, double *cpu, int n) {
    double w = quantile(wall, n, 0.5);
    printf("  %-44s median %7.0f us  (p10 %.0f, p90 %.0f); CPU median %.0f us\n", name, w,
           quantile(wall, n, 0.1), quantile(wall, n, 0.9), quantile(cpu, n, 0.5));
}

static int bench(int n, char *self, char *lib, char *domain, char *mx, char *chain_path, char *config_c) {
    char *argv_a[] = {self, "a", lib, chain_path, NULL};
    char *argv_b[] = {self, "b", lib, domain, mx, chain_path, NULL};
    char *argv_c[] = {self, "c", lib, config_c, domain, mx, chain_path, NULL};
    int cases = config_c ? 3 : 2;
    char *const *argvs[3] = {argv_a, argv_b, argv_c};
    double *wall[3], *cpu[3];
    for (int k = 0; k < 3; k++) {
        wall[k] = calloc((size_t)n, sizeof(double));
        cpu[k] = calloc((size_t)n, sizeof(double));
        if (!wall[k] || !cpu[k])
            return 2;
    }
    /* Warm-up: page cache, the store's WAL and shared memory files. */
    double ignored;
    for (int k = 0; k < cases; k++)
        if (timed(argvs[k], &ignored) < 0)
            return 1;
    for (int i = 0; i < n; i++) {
        /* Each round runs every case once, starting with another one each time. */
        for (int j = 0; j < cases; j++) {
            int k = (i + j) % cases;
            wall[k][i] = timed(argvs[k], &cpu[k][i]);
            if (wall[k][i] < 0)
                return 1;
        }
    }
    double ma = quantile(wall[0], n, 0.5), mb = quantile(wall[1], n, 0.5);
    double ca = quantile(cpu[0], n, 0.5), cb = quantile(cpu[1], n, 0.5);
    printf("a process per delivery, %d rounds, one process of each case per round (exec to exit; CPU = user + system from wait4):\n", n);
    report("(a) dlopen only:", wall[0], cpu[0], n);
    report("(b) dlopen + mtasts_check + exit flush:", wall[1], cpu[1], n);
    if (config_c)
        report("(c) as (b), ca_file = system bundle + 1:", wall[2], cpu[2], n);
    printf("  median(b) - median(a): %.0f us wall (target <= 300 us), %.0f us CPU\n", mb - ma, cb - ca);
    if (config_c)
        printf("  median(c) - median(a): %.0f us wall, %.0f us CPU\n", quantile(wall[2], n, 0.5) - ma,
               quantile(cpu[2], n, 0.5) - ca);
    for (int k = 0; k < 3; k++) {
        free(wall[k]);
        free(cpu[k]);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "a") == 0)
        return case_a(argv[2], argv[3]);
    if (argc == 6 && strcmp(argv[1], "b") == 0)
        return case_b(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 7 && strcmp(argv[1], "c") == 0)
        return case_c(argv[2], argv[3], argv[4], argv[5], argv[6]);
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "bench") == 0) {
        int n = atoi(argv[2]);
        if (n < 1) {
            fprintf(stderr, "N must be a positive number\n");
            return 2;
        }
        return bench(n, argv[0], argv[3], argv[4], argv[5], argv[6], argc == 8 ? argv[7] : NULL);
    }
    fprintf(stderr,
            "usage: %s bench N LIB DOMAIN MX CHAIN [CONFIG_C] | a LIB CHAIN | b LIB DOMAIN MX CHAIN"
            " | c LIB CONFIG DOMAIN MX CHAIN\n",
            argv[0]);
    return 2;
}
