/* bench_kfac.c - the K-FAC epoch of nets/fmnist-mlp at batch 128 next to
 * the SGD epoch in the same run, with K-FAC's breakdown (statistics,
 * inversions, preconditioning, F-vector products), for the default KL-clip
 * rule and for the quadratic rule that needs exact F products.
 *
 * usage: bench_kfac [NETFILE] [DATA_DIR] [EPOCHS] */
#include <stdio.h>
#include <stdlib.h>

#include "kfac.h"

/* median seconds per epoch over `epochs` epochs of one configuration */
static int time_epochs(const kfac_net_spec *s, const kfac_train_params *p, const kfac_dataset *d, int epochs,
                       double *median, double *last_loss, kfac_kfac_stats *ks)
{
    kfac_trainer *t;
    if (kfac_trainer_new(s, p, d, &t) != KFAC_OK)
        return -1;
    double times[16], prev = 0;
    for (int e = 0; e < epochs; e++) {
        kfac_epoch_stats st;
        if (kfac_trainer_epoch(t, NULL, NULL, &st) != KFAC_OK) {
            kfac_trainer_free(t);
            return -1;
        }
        times[e] = st.seconds - prev;
        prev = st.seconds;
        *last_loss = st.train_loss;
    }
    if (ks && kfac_trainer_kfac_stats(t, ks) != KFAC_OK)
        ks = NULL;
    kfac_trainer_free(t);
    for (int i = 1; i < epochs; i++)
        for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
            double tmp = times[j];
            times[j] = times[j - 1];
            times[j - 1] = tmp;
        }
    *median = times[epochs / 2];
    return 0;
}

int main(int argc, char **argv)
{
    const char *netfile = argc > 1 ? argv[1] : "nets/fmnist-mlp.net";
    const char *data = argc > 2 ? argv[2] : KFAC_DEFAULT_DATA_DIR;
    int epochs = argc > 3 ? atoi(argv[3]) : 2;
    if (epochs < 1 || epochs > 16)
        epochs = 2;
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
    printf("# %s, batch 128, %d threads, OPENBLAS_CORETYPE=%s, median of %d epochs each\n", netfile,
           kfac_get_threads(), core ? core : "(unset)", epochs);

    kfac_train_params sgd = base, kfac = base, quad = base;
    sgd.optimizer = KFAC_OPT_SGD;
    sgd.optim.lr = 0.05f;
    kfac.optimizer = KFAC_OPT_KFAC;
    quad.optimizer = KFAC_OPT_KFAC;
    quad.kfac.rule = KFAC_RULE_QUADRATIC;
    quad.kfac.damping = 1.0f;
    double t_sgd, t_kfac, t_quad, loss;
    kfac_kfac_stats ks, kq;
    if (time_epochs(&spec, &sgd, &train, epochs, &t_sgd, &loss, NULL) ||
        time_epochs(&spec, &kfac, &train, epochs, &t_kfac, &loss, &ks) ||
        time_epochs(&spec, &quad, &train, 1, &t_quad, &loss, &kq)) {
        fprintf(stderr, "bench_kfac: %s\n", kfac_last_error());
        return 1;
    }
    printf("%-34s %9s %7s\n", "run", "s/epoch", "x SGD");
    printf("%-34s %9.3f %7.2f\n", "sgd", t_sgd, 1.0);
    printf("%-34s %9.3f %7.2f\n", "kfac, kl_clip rule (default)", t_kfac, t_kfac / t_sgd);
    printf("%-34s %9.3f %7.2f\n", "kfac, quadratic rule (F products)", t_quad, t_quad / t_sgd);
    /* the breakdowns are cumulative over the runs' epochs: per epoch */
    double e = epochs;
    printf("\nper epoch, seconds        statistics  inversions  precondition  F-products  rest (fwd/bwd, data)\n");
    printf("kfac, kl_clip           %10.3f  %10.3f  %12.3f  %10.3f  %10.3f   (%ld inversions)\n",
           ks.seconds_stats / e, ks.seconds_invert / e, ks.seconds_precond / e, ks.seconds_fvp / e,
           t_kfac - (ks.seconds_stats + ks.seconds_invert + ks.seconds_precond + ks.seconds_fvp) / e,
           ks.inversions);
    printf("kfac, quadratic         %10.3f  %10.3f  %12.3f  %10.3f  %10.3f   (%ld inversions)\n", kq.seconds_stats,
           kq.seconds_invert, kq.seconds_precond, kq.seconds_fvp,
           t_quad - (kq.seconds_stats + kq.seconds_invert + kq.seconds_precond + kq.seconds_fvp), kq.inversions);
    kfac_dataset_free(&train);
    return 0;
}
