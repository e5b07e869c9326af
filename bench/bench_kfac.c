/* bench_kfac.c - the K-FAC epoch of nets/fmnist-mlp at batch 128 next to
 * the SGD epoch in the same run, with K-FAC's breakdown (statistics,
 * inversions, preconditioning, F-vector products), for the default KL-clip
 * rule and for the quadratic rule that needs exact F products.
 *
 * usage: bench_kfac [NETFILE] [DATA_DIR] [EPOCHS] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "kfac.h"

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

/* Epoch times of several configurations, interleaved epoch by epoch so
 * that the machine's drift (this VM's speed moves by 20% over minutes)
 * falls on all of them alike. */
enum { MAX_RUNS = 4, MAX_EPOCHS = 16 };

static int run_interleaved(const kfac_net_spec *s, const kfac_train_params *p, int runs, const kfac_dataset *d,
                           const int *epochs, double times[][MAX_EPOCHS], kfac_kfac_stats *ks)
{
    kfac_trainer *t[MAX_RUNS] = {0};
    double prev[MAX_RUNS] = {0};
    int st = 0, most = 0;
    for (int r = 0; r < runs && !st; r++) {
        st = kfac_trainer_new(s, &p[r], d, &t[r]) != KFAC_OK;
        most = epochs[r] > most ? epochs[r] : most;
    }
    for (int e = 0; e < most && !st; e++)
        for (int r = 0; r < runs && !st; r++) {
            if (e >= epochs[r])
                continue;
            kfac_epoch_stats es;
            st = kfac_trainer_epoch(t[r], NULL, NULL, &es) != KFAC_OK;
            times[r][e] = es.seconds - prev[r];
            prev[r] = es.seconds;
        }
    for (int r = 0; r < runs; r++) {
        if (!st && p[r].optimizer == KFAC_OPT_KFAC)
            kfac_trainer_kfac_stats(t[r], &ks[r]);
        kfac_trainer_free(t[r]);
    }
    return st ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *netfile = argc > 1 ? argv[1] : "nets/fmnist-mlp.net";
    const char *data = argc > 2 ? argv[2] : KFAC_DEFAULT_DATA_DIR;
    int epochs = argc > 3 ? atoi(argv[3]) : 3;
    if (epochs < 1 || epochs > MAX_EPOCHS)
        epochs = 3;
    kfac_net_spec spec;
    kfac_train_params base;
    kfac_dataset train = {0};
    if (kfac_netfile_load(netfile, &spec, &base) != KFAC_OK || kfac_mnist_load(data, "train", &train) != KFAC_OK) {
        fprintf(stderr, "bench_kfac: %s\n", kfac_last_error());
        return 1;
    }
    kfac_set_threads(0);
    base.batch = 128;
    base.kfac.cov_every = 10; /* KFAC-Pytorch's defaults */
    base.kfac.inv_every = 100;
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("# %s, batch 128, %d threads, OPENBLAS_CORETYPE=%s, median of %d interleaved epochs each\n", netfile,
           kfac_get_threads(), core ? core : "(unset)", epochs);

    kfac_train_params p[3] = {base, base, base};
    p[0].optimizer = KFAC_OPT_SGD;
    p[0].optim.lr = 0.05f;
    p[1].optimizer = KFAC_OPT_KFAC;
    p[2].optimizer = KFAC_OPT_KFAC;
    p[2].kfac.rule = KFAC_RULE_QUADRATIC;
    p[2].kfac.damping = 1.0f;
    int ep[3] = {epochs, epochs, epochs > 1 ? epochs - 1 : 1};
    double times[3][MAX_EPOCHS];
    kfac_kfac_stats ks[3];
    if (run_interleaved(&spec, p, 3, &train, ep, times, ks)) {
        fprintf(stderr, "bench_kfac: %s\n", kfac_last_error());
        return 1;
    }
    double t_sgd = median(times[0], ep[0]), t_kfac = median(times[1], ep[1]), t_quad = median(times[2], ep[2]);
    printf("%-34s %9s %7s   (epochs: s each)\n", "run", "s/epoch", "x SGD");
    const char *names[3] = {"sgd", "kfac, kl_clip rule (default)", "kfac, quadratic rule (F products)"};
    double med[3] = {t_sgd, t_kfac, t_quad};
    for (int r = 0; r < 3; r++) {
        printf("%-34s %9.3f %7.2f   (", names[r], med[r], med[r] / t_sgd);
        for (int e = 0; e < ep[r]; e++)
            printf("%s%.2f", e ? " " : "", times[r][e]);
        printf(")\n");
    }
    /* the breakdowns are cumulative over the runs' epochs: per epoch */
    printf("\nper epoch, seconds        statistics  inversions  precondition  F-products  rest (fwd/bwd, data)\n");
    for (int r = 1; r < 3; r++) {
        double e = ep[r], total = 0;
        for (int k = 0; k < ep[r]; k++)
            total += times[r][k];
        const kfac_kfac_stats *k = &ks[r];
        printf("%-22s %10.3f  %10.3f  %12.3f  %10.3f  %10.3f   (%ld inversions)\n", r == 1 ? "kfac, kl_clip" : "kfac, quadratic",
               k->seconds_stats / e, k->seconds_invert / e, k->seconds_precond / e, k->seconds_fvp / e,
               (total - k->seconds_stats - k->seconds_invert - k->seconds_precond - k->seconds_fvp) / e,
               k->inversions);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak resident memory of this process: %.0f MiB\n", ru.ru_maxrss / 1024.0);
    kfac_dataset_free(&train);
    return 0;
}
