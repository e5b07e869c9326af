/* bench_epoch.c - epoch time and effective GFLOP/s of training
 * nets/fmnist-mlp (batch 128, SGD) on Fashion-MNIST, next to the rate
 * cblas_sgemm reaches on exactly the same matrix shapes in the same run.
 *
 * usage: bench_epoch [NETFILE] [DATA_DIR] [EPOCHS] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <string.h>
#include <time.h>

#include "kfac.h"
#include "plural.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Flops of one training step at batch b: forward S = abar W^T, gradient
 * dW = g^T abar, and back-propagation g W for every layer but the first
 * (its input needs no gradient). Element-wise work is not counted. */
static double step_flops(const kfac_net_spec *s, int b)
{
    double f = 0.0;
    int in = s->inputs;
    for (int l = 0; l < s->n_layers; l++) {
        int d = s->layers[l].units;
        f += 2.0 * b * d * (in + 1) * 2; /* forward + weight gradient */
        if (l > 0)
            f += 2.0 * b * d * in; /* back-propagation */
        in = d;
    }
    return f;
}

/* The same sgemm calls a step makes, on random matrices, repeated: the
 * rate a perfect implementation of this network could reach. */
static double sgemm_rate(const kfac_net_spec *s, int b, int reps)
{
    int maxd = s->inputs + 1;
    for (int l = 0; l < s->n_layers; l++)
        maxd = s->layers[l].units + 1 > maxd ? s->layers[l].units + 1 : maxd;
    size_t big = (size_t)maxd * maxd, act = (size_t)b * maxd;
    float *w = malloc(sizeof *w * big), *dw = malloc(sizeof *dw * big);
    float *x = malloc(sizeof *x * act), *y = malloc(sizeof *y * act), *g = malloc(sizeof *g * act);
    for (size_t i = 0; i < big; i++)
        w[i] = (float)((i * 2654435761u) % 1000) * 1e-4f;
    for (size_t i = 0; i < act; i++)
        x[i] = g[i] = (float)((i * 40503u) % 1000) * 1e-3f;
    double best = 0.0;
    for (int trial = 0; trial < 3; trial++) {
        double t0 = now();
        for (int r = 0; r < reps; r++) {
            int in = s->inputs;
            for (int l = 0; l < s->n_layers; l++) {
                int d = s->layers[l].units;
                /* forward: y (b x d) = x (b x in+1) W^T */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, d, in + 1, 1.0f, x, in + 1, w, in + 1,
                            0.0f, y, d + 1);
                /* gradient: dW (d x in+1) = g^T (d x b) x (b x in+1) */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, in + 1, b, 1.0f / b, g, d, x, in + 1,
                            0.0f, dw, in + 1);
                /* back-propagation: g_prev (b x in) = g (b x d) W[:, :in] */
                if (l > 0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, in, d, 1.0f, g, d, w, in + 1,
                                0.0f, y, in);
                in = d;
            }
        }
        double rate = step_flops(s, b) * reps / (now() - t0);
        best = rate > best ? rate : best;
    }
    free(w), free(dw), free(x), free(y), free(g);
    return best;
}

int main(int argc, char **argv)
{
    const char *netfile = argc > 1 ? argv[1] : "nets/fmnist-mlp.net";
    const char *data = argc > 2 ? argv[2] : KFAC_DEFAULT_DATA_DIR;
    int epochs = argc > 3 ? atoi(argv[3]) : 3;
    kfac_net_spec spec;
    kfac_train_params p;
    kfac_dataset train = {0};
    if (kfac_netfile_load(netfile, &spec, &p) != KFAC_OK || kfac_mnist_load(data, "train", &train) != KFAC_OK) {
        fprintf(stderr, "bench_epoch: %s\n", kfac_last_error());
        return 1;
    }
    kfac_set_threads(0);
    p.optimizer = KFAC_OPT_SGD;
    p.batch = 128;
    p.optim.lr = 0.01f;
    kfac_train_params_set(&p, "sgd.lr", "inherit"); /* this lr, not the net file's [sgd] one */
    kfac_trainer *t;
    if (kfac_trainer_new(&spec, &p, &train, &t) != KFAC_OK) {
        fprintf(stderr, "bench_epoch: %s\n", kfac_last_error());
        return 1;
    }
    long full = train.n / p.batch, rest = train.n % p.batch;
    double epoch_flops = step_flops(&spec, p.batch) * full + (rest ? step_flops(&spec, (int)rest) : 0.0);

    const char *core = getenv("OPENBLAS_CORETYPE");
    int threads = kfac_get_threads();
    printf("# %s, batch %d, sgd, %d thread%s, OPENBLAS_CORETYPE=%s, %s\n", netfile, p.batch, threads, KFAC_S(threads),
           core ? core : "(unset)", openblas_get_config());
    printf("# %.1f GFLOP per epoch (matrix products only)\n", epoch_flops * 1e-9);
    printf("%6s %10s %10s\n", "epoch", "seconds", "GFLOP/s");
    double times[64], prev = 0.0;
    if (epochs > 64)
        epochs = 64;
    for (int e = 0; e < epochs; e++) {
        kfac_epoch_stats s;
        if (kfac_trainer_epoch(t, NULL, NULL, &s) != KFAC_OK) {
            fprintf(stderr, "bench_epoch: %s\n", kfac_last_error());
            return 1;
        }
        times[e] = s.seconds - prev;
        prev = s.seconds;
        printf("%6d %10.3f %10.1f\n", e + 1, times[e], epoch_flops / times[e] * 1e-9);
        fflush(stdout);
    }
    /* median epoch */
    for (int i = 1; i < epochs; i++)
        for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
            double tmp = times[j];
            times[j] = times[j - 1];
            times[j - 1] = tmp;
        }
    double med = times[epochs / 2];
    double rate = epoch_flops / med;
    double peak = sgemm_rate(&spec, p.batch, 200);
    printf("median epoch %.3f s: %.1f GFLOP/s; sgemm on the same shapes %.1f GFLOP/s; ratio %.2f\n", med,
           rate * 1e-9, peak * 1e-9, rate / peak);
    kfac_trainer_free(t);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak resident memory of this process: %.0f MiB\n", ru.ru_maxrss / 1024.0);
    kfac_dataset_free(&train);
    return 0;
}
