/* check_cmd.c - `kfac check`: K-FAC against the exact natural gradient on
 * a tiny network and real data (docs/algorithm.md §7), with pass/fail tolerances. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Tolerances: float32 arithmetic throughout, a sampled Fisher in K-FAC. */
#define TOL_GRAD 2e-2   /* gradient vs central differences, relative */
#define TOL_FVP 1e-4    /* R-op F v vs explicit F v, relative */
#define TOL_KL 0.05     /* measured KL vs 1/2 s^T F s, relative */
#define MIN_COS_KFAC 0.5 /* K-FAC must point near the natural gradient ... */

static void check_usage(FILE *f)
{
    fprintf(f,
            "usage: kfac check NETFILE [--data DIR] [--examples N] [--warmup-epochs N]\n"
            "                  [--damping X] [--rank-max N] [--threads N]\n"
            "\n"
            "On a tiny network (nets/tiny.net: 970 parameters) and real data: train\n"
            "--warmup-epochs epochs [1] with the net file's optimizer, then on the first\n"
            "--examples training examples [1000] build the exact Fisher F and the exact\n"
            "natural gradient d = (F + lambda I)^-1 grad (lambda = --damping, else the net\n"
            "file's K-FAC damping), and report:\n"
            "  - cosine between the K-FAC direction and d (must be >= %.2f and above the\n"
            "    plain gradient's), and between the gradient and d; and the K-FAC\n"
            "    cosine with each inversion (lowrank with --rank-max, else the net\n"
            "    file's: a factor smaller than 2 (rank_max + 8) stays dense);\n"
            "  - 1/2 s^T F s against the measured KL of a small step s (within %.0f%%);\n"
            "  - the gradient against central differences (within %.0e relative);\n"
            "  - F v by the R-op against the explicit F (within %.0e relative).\n"
            "Exit status 5 if any is outside its tolerance.\n",
            MIN_COS_KFAC, 100 * TOL_KL, TOL_GRAD, TOL_FVP);
}

int cmd_check(int argc, char **argv)
{
    const char *netfile = NULL, *data = KFAC_DEFAULT_DATA_DIR;
    long examples = 1000, warmup = 1, threads = 0;
    float damping = 0.0f;
    long rank_max = 0;
    for (int i = 1; i < argc; i++) {
        const char *a, *v;
        size_t len;
        switch (cli_next_arg("check", argc, argv, &i, &netfile, &a, &len, &v)) {
        case CLI_ARG_HELP:
            check_usage(stdout);
            return EXIT_OK;
        case CLI_ARG_ERROR:
            return EXIT_USAGE;
        case CLI_ARG_NETFILE:
            continue;
        case CLI_ARG_OPTION:
            break;
        }
        int bad;
        if (cli_opt_is(a, len, "--data"))
            data = v, bad = 0;
        else if (cli_opt_is(a, len, "--examples"))
            bad = cli_parse_int(v, 1, 100000, &examples);
        else if (cli_opt_is(a, len, "--warmup-epochs"))
            bad = cli_parse_int(v, 0, 1000, &warmup);
        else if (cli_opt_is(a, len, "--threads"))
            bad = cli_parse_int(v, 1, 1024, &threads);
        else if (cli_opt_is(a, len, "--damping"))
            bad = cli_parse_float(v, &damping) || !(damping > 0.0f);
        else if (cli_opt_is(a, len, "--rank-max"))
            bad = cli_parse_int(v, 1, 4096, &rank_max);
        else {
            cli_error("check: unknown option '%.*s' (try 'kfac check --help')", (int)len, a);
            return EXIT_USAGE;
        }
        if (bad) {
            cli_error("check: %.*s '%s': not a valid number in range", (int)len, a, v);
            return EXIT_USAGE;
        }
    }
    if (!netfile) {
        cli_error("check: no NETFILE given (try 'kfac check --help')");
        return EXIT_USAGE;
    }
    kfac_net_spec spec;
    kfac_train_params p;
    kfac_status st = kfac_netfile_load(netfile, &spec, &p);
    if (st != KFAC_OK) {
        cli_error("%s", kfac_last_error());
        return cli_status_exit(st);
    }
    if (damping > 0.0f)
        p.kfac.damping = damping;
    if (rank_max > 0)
        p.kfac.rank_max = (int)rank_max;
    if (threads > 0)
        kfac_set_threads((int)threads);
    kfac_dataset train, test;
    int code = cli_load_data(data, &train, &test);
    if (code != EXIT_OK)
        return code;
    if (examples > train.n)
        examples = train.n;
    kfac_check_report r;
    st = kfac_check(&spec, &p, &train, (int)warmup, (int)examples, &r);
    kfac_dataset_free(&train);
    kfac_dataset_free(&test);
    if (st != KFAC_OK) {
        cli_error("%s: %s", netfile, kfac_last_error());
        return cli_status_exit(st);
    }
    double kl_err = fabs(r.kl_measured / r.kl_quadratic - 1.0);
    int ok_cos = r.cos_kfac >= MIN_COS_KFAC && r.cos_kfac > r.cos_grad, ok_kl = kl_err <= TOL_KL;
    int ok_grad = r.grad_rel_err <= TOL_GRAD, ok_fvp = r.fvp_rel_err <= TOL_FVP;
    printf("# %s: %d parameters, %d example%s of %s, damping %g, after %ld warm-up epoch%s "
           "(training loss %.4f)\n",
           netfile, r.n_params, r.examples, KFAC_S(r.examples), data, r.damping, warmup, KFAC_S(warmup),
           r.warmup_loss);
    printf("cosine(K-FAC, exact natural gradient)    %8.4f   %s (>= %.2f and > the gradient's)\n", r.cos_kfac,
           ok_cos ? "ok  " : "FAIL", MIN_COS_KFAC);
    printf("cosine(gradient, exact natural gradient) %8.4f\n", r.cos_grad);
    for (int k = 0; k < KFAC_INV_COUNT; k++) {
        printf("  K-FAC with %-8s inverses            %8.4f", kfac_inversion_name((kfac_inversion)k),
               r.cos_by_inversion[k]);
        if (k == KFAC_INV_LOWRANK) {
            printf("   (rank_max %d; ranks of A^-1, G^-1:", p.kfac.rank_max);
            for (int l = 0; l < r.n_layers; l++)
                printf(" %d,%d", r.rank_a[l], r.rank_g[l]);
            printf(")");
        }
        printf("\n");
    }
    printf("KL of a small step: measured %.4e, 1/2 s^T F s %.4e, relative error %.2e   %s (<= %.0e)\n",
           r.kl_measured, r.kl_quadratic, kl_err, ok_kl ? "ok  " : "FAIL", TOL_KL);
    printf("gradient vs central differences: relative error %.2e   %s (<= %.0e)\n", r.grad_rel_err,
           ok_grad ? "ok  " : "FAIL", TOL_GRAD);
    printf("R-op F v vs explicit F v: relative error %.2e   %s (<= %.0e)\n", r.fvp_rel_err,
           ok_fvp ? "ok  " : "FAIL", TOL_FVP);
    return ok_cos && ok_kl && ok_grad && ok_fvp ? EXIT_OK : EXIT_CHECK;
}
