/* test_main.c - runs every suite. Check forks a child per test; this
 * process never enters OpenMP itself, so the children start with a clean
 * libgomp (a fork after OpenMP was used can hang). */
#define _XOPEN_SOURCE 700 /* realpath */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests.h"

const char *test_data_dir(void)
{
    const char *d = getenv("KFAC_DATA");
    return d && *d ? d : "/usr/share/datasets/fashion-mnist";
}

const char *test_root(void)
{
    const char *d = getenv("KFAC_ROOT");
    return d && *d ? d : "..";
}

const char *test_kfac_bin(void)
{
    static char path[PATH_MAX + 16];
    const char *b = getenv("KFAC_BIN");
    if (b && *b)
        return b;
    /* absolute: the CLI tests run it from the project root */
    char root[PATH_MAX];
    snprintf(path, sizeof path, "%s/build/kfac", realpath(test_root(), root) ? root : test_root());
    return path;
}

static char tmpdir[256];

static void remove_tmpdir(void)
{
    char cmd[600];
    if (tmpdir[0] && getpid() == (pid_t)atol(strrchr(tmpdir, '.') + 1)) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
}

const char *test_tmpdir(void) { return tmpdir; }

int main(void)
{
    /* the pid suffix lets only the parent (not forked children) clean up */
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kfac_tests.%ld", (long)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", tmpdir, tmpdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot create %s\n", tmpdir);
        return 1;
    }
    atexit(remove_tmpdir);
    /* Timeouts only turn a hang into a failure. The suites' timeouts are
     * sized for an idle machine; a machine twice as slow, or sharing its
     * cores with another process, must not fail a test, so they get a wide
     * margin (a hang is forever either way). Check reads this as each TCase
     * is created; a value in the environment wins. */
    setenv("CK_TIMEOUT_MULTIPLIER", "10", 0);

    Suite *(*suites[])(void) = {rng_suite,    net_suite,    idx_suite,  csv_suite,  netfile_suite,    optim_suite,
                                linalg_suite, fisher_suite, kfac_suite, checkpoint_suite, train_suite,
                                cli_suite,    badinput_cli_suite, api_suite, dist_suite,
                                docs_suite, signals_suite, handles_suite, conv_suite, cnn_suite, tridiag_suite};
    SRunner *sr = srunner_create(suites[0]());
    for (size_t i = 1; i < sizeof suites / sizeof *suites; i++)
        srunner_add_suite(sr, suites[i]());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
