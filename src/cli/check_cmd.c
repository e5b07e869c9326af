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
    enum { O_DATA, O_EXAMPLES, O_WARMUP, O_THREADS, O_DAMPING, O_RANK_MAX };
    static const cli_opt opts[] = {{"--data", 1, O_DATA},       {"--examples", 1, O_EXAMPLES},
                                   {"--warmup-epochs", 1, O_WARMUP}, {"--threads", 1, O_THREADS},
                                   {"--damping", 1, O_DAMPING}, {"--rank-max", 1, O_RANK_MAX}};
    const char *data = KFAC_DEFAULT_DATA_DIR;
    long examples = 1000, warmup = 1, threads = 0;
    cli_args args;
    int code = cli_getopt("check", argc, argv, opts, (int)(sizeof opts / sizeof *opts), &args);
    if (code >= 0)
        return code;
    if (args.help) {
        cli_args_free(&args);
        check_usage(stdout);
        return EXIT_OK;
    }
    const char *netfile = args.netfile;
    kfac_net_spec spec;
    kfac_train_params p;
    kfac_status st = kfac_netfile_load(netfile, &spec, &p);
    if (st != KFAC_OK) {
        cli_args_free(&args);
        cli_error("%s", kfac_last_error());
        return cli_status_exit(st);
    }
    for (int k = 0; k < args.n && code < 0; k++) {
        const char *v = args.v[k].value;
        int bad = 0;
        switch (args.v[k].id) {
        case O_DATA:
            data = v;
            break;
        case O_EXAMPLES:
            bad = cli_parse_int(v, 1, 100000, &examples);
            break;
        case O_WARMUP:
            bad = cli_parse_int(v, 0, 1000, &warmup);
            break;
        case O_THREADS:
            bad = cli_parse_int(v, 1, 1024, &threads);
            break;
        default: /* the net file's K-FAC settings, checked by the library's table */
            if (kfac_train_params_set(&p, args.v[k].id == O_DAMPING ? "kfac.damping" : "kfac.rank_max", v) !=
                KFAC_OK) {
                cli_error("check: %s '%s': %s", args.v[k].name, v, kfac_last_error());
                code = EXIT_USAGE;
            }
        }
        if (bad) {
            cli_error("check: %s '%s': not a valid number in range", args.v[k].name, v);
            code = EXIT_USAGE;
        }
    }
    cli_args_free(&args);
    if (code >= 0)
        return code;
    if (threads > 0)
        cli_set_threads(threads);
    kfac_dataset train, test;
    code = cli_load_data(data, &spec, &p, &train, &test);
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
