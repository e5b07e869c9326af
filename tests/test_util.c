/* test_util.c - helpers the suites share (tests.h): whole files read back,
 * big-endian fields, a small learnable MNIST-format data set, and the
 * networks' central-difference gradient check. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kfac.h"
#include "tests.h"

char *test_slurp(const char *path)
{
    static char buf[1 << 16];
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

void test_write_be(FILE *f, uint64_t v, int bytes)
{
    for (int k = bytes - 1; k >= 0; k--)
        fputc((int)(v >> (8 * k)) & 0xFF, f);
}

void test_write_mnist(const char *dir, int n, uint64_t seed)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    const char *sets[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        int count = s == 0 ? n : n / 4;
        char path[700];
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, sets[s]);
        FILE *fi = fopen(path, "wb");
        snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, sets[s]);
        FILE *fl = fopen(path, "wb");
        ck_assert(fi && fl);
        test_write_be(fi, 0x803, 4), test_write_be(fi, (uint32_t)count, 4);
        test_write_be(fi, 28, 4), test_write_be(fi, 28, 4);
        test_write_be(fl, 0x801, 4), test_write_be(fl, (uint32_t)count, 4);
        for (int i = 0; i < count; i++) {
            unsigned char label = (unsigned char)kfac_rng_below(&r, 10), img[784];
            for (int k = 0; k < 784; k++)
                img[k] = (unsigned char)kfac_rng_below(&r, 60);
            memset(img + 28 * (2 + 2 * label), 255, 28);
            fwrite(img, 1, sizeof img, fi);
            fputc(label, fl);
        }
        fclose(fi);
        fclose(fl);
    }
}

void test_fill_uniform(float *v, size_t n, float lo, float hi, kfac_rng *r)
{
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * (float)kfac_rng_uniform(r);
}

static double batch_loss(kfac_net *net, const float *x, const float *y, int batch)
{
    double loss;
    ck_assert_int_eq(kfac_net_forward(net, x, batch), KFAC_OK);
    ck_assert_int_eq(kfac_net_loss(net, y, &loss, NULL), KFAC_OK);
    return loss;
}

/* Relative error |fd - grad| / |grad| of the analytic gradient against
 * central differences over every parameter; asserts the gradient is not
 * trivially zero. */
double test_gradient_error(kfac_net *net, const float *x, const float *y, int batch)
{
    size_t n = kfac_net_n_params(net);
    float *grad = malloc(sizeof *grad * n);
    batch_loss(net, x, y, batch);
    ck_assert_int_eq(kfac_net_backward(net, y, grad), KFAC_OK);
    float *theta = kfac_net_params(net);
    double base = batch_loss(net, x, y, batch);
    double diff2 = 0.0, norm2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        float keep = theta[i];
        /* float32 forward: h balances truncation (h^2) and rounding (eps/h) */
        const float h = 3e-3f;
        theta[i] = keep + h;
        double up = batch_loss(net, x, y, batch);
        theta[i] = keep - h;
        double down = batch_loss(net, x, y, batch);
        theta[i] = keep;
        /* a ReLU kink within h spoils the central difference but leaves one
         * one-sided difference exact: take whichever agrees best. A wrong
         * gradient disagrees with all three. */
        double cands[3] = {(up - down) / (2.0 * h), (up - base) / h, (base - down) / h};
        double best = fabs(cands[0] - grad[i]);
        for (int k = 1; k < 3; k++)
            best = fmin(best, fabs(cands[k] - grad[i]));
        diff2 += best * best;
        norm2 += (double)grad[i] * grad[i];
    }
    free(grad);
    ck_assert_msg(sqrt(norm2) > 1e-3, "gradient is (nearly) zero: |g| = %g", sqrt(norm2));
    return sqrt(diff2 / norm2);
}
