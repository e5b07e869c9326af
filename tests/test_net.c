/* test_net.c - the network: central-difference gradient checks for every
 * activation and loss, recorded abar and g against an independent double
 * precision reference (including the batch scaling), initialisations, and
 * the loss table's sampling and Hessian-vector products. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kfac.h"
#include "loss.h"
#include "net.h"
#include "tests.h"

#define fill_uniform test_fill_uniform

/* Dense targets of the right kind for a loss: one-hot, probabilities in
 * (0,1) or real values. */
static void fill_targets(kfac_loss loss, float *y, int n, int d, kfac_rng *r)
{
    if (loss == KFAC_LOSS_SOFTMAX_XENT) {
        memset(y, 0, sizeof *y * (size_t)n * d);
        for (int i = 0; i < n; i++)
            y[(size_t)i * d + kfac_rng_below(r, (uint32_t)d)] = 1.0f;
    } else if (loss == KFAC_LOSS_SIGMOID_XENT) {
        fill_uniform(y, (size_t)n * d, 0.05f, 0.95f, r);
    } else {
        fill_uniform(y, (size_t)n * d, -1.0f, 1.0f, r);
    }
}

static kfac_net *make_net(int inputs, int n_layers, const int *units, const kfac_activation *acts,
                          kfac_loss loss, int max_batch, uint64_t seed)
{
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = inputs;
    s.n_layers = n_layers;
    s.loss = loss;
    s.init = KFAC_INIT_GLOROT;
    for (int l = 0; l < n_layers; l++) {
        s.layers[l].units = units[l];
        s.layers[l].activation = acts[l];
    }
    kfac_net *net = NULL;
    ck_assert_int_eq(kfac_net_new(&s, max_batch, &net), KFAC_OK);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    ck_assert_int_eq(kfac_net_init_weights(net, &r), KFAC_OK);
    /* non-zero biases so their gradients are exercised too */
    for (int l = 0; l < n_layers; l++) {
        int rows, cols;
        float *w = kfac_net_layer_weights(net, l, &rows, &cols);
        for (int i = 0; i < rows; i++)
            w[(size_t)i * cols + cols - 1] = 0.3f * (float)(kfac_rng_uniform(&r) - 0.5);
    }
    return net;
}

#define gradient_error test_gradient_error

static void check_gradient(int n_layers, const int *units, const kfac_activation *acts, kfac_loss loss)
{
    const int inputs = 5, batch = 7;
    kfac_net *net = make_net(inputs, n_layers, units, acts, loss, batch, 42);
    kfac_rng r;
    kfac_rng_seed(&r, 7);
    float x[5 * 7], y[7 * 16];
    fill_uniform(x, sizeof x / sizeof *x, -1.0f, 1.0f, &r);
    fill_targets(loss, y, batch, units[n_layers - 1], &r);
    double err = gradient_error(net, x, y, batch);
    ck_assert_msg(err < 3e-3, "loss %s, activation %s: gradient relative error %g", kfac_loss_name(loss),
                  kfac_activation_name(acts[0]), err);
    kfac_net_free(net);
}

/* every activation in a hidden layer, under every loss */
START_TEST(test_gradient_activation_loss)
{
    kfac_activation act = (kfac_activation)(_i % KFAC_ACT_COUNT);
    kfac_loss loss = (kfac_loss)(_i / KFAC_ACT_COUNT);
    int units[2] = {6, 4};
    /* squared error puts the activation at the output too */
    kfac_activation acts[2] = {act, loss == KFAC_LOSS_SQUARED ? act : KFAC_ACT_LINEAR};
    check_gradient(2, units, acts, loss);
}
END_TEST

START_TEST(test_gradient_deep)
{
    int units[4] = {8, 7, 6, 3};
    kfac_activation acts[4] = {KFAC_ACT_TANH, KFAC_ACT_RELU, KFAC_ACT_SIGMOID, KFAC_ACT_LINEAR};
    check_gradient(4, units, acts, KFAC_LOSS_SOFTMAX_XENT);
    check_gradient(4, units, acts, KFAC_LOSS_SIGMOID_XENT);
}
END_TEST

/* ---- an independent double-precision reference of forward and backward */

static double act_f(kfac_activation a, double s)
{
    switch (a) {
    case KFAC_ACT_RELU:
        return s > 0 ? s : 0;
    case KFAC_ACT_TANH:
        return tanh(s);
    case KFAC_ACT_SIGMOID:
        return 1.0 / (1.0 + exp(-s));
    default:
        return s;
    }
}

static double act_d(kfac_activation a, double s)
{
    switch (a) {
    case KFAC_ACT_RELU:
        return s > 0;
    case KFAC_ACT_TANH:
        return 1.0 - tanh(s) * tanh(s);
    case KFAC_ACT_SIGMOID:
        return act_f(a, s) * (1.0 - act_f(a, s));
    default:
        return 1.0;
    }
}

START_TEST(test_recorded_abar_and_g)
{
    enum { IN = 4, B = 5, L = 3 };
    int units[L] = {6, 5, 3};
    kfac_activation acts[L] = {KFAC_ACT_TANH, KFAC_ACT_SIGMOID, KFAC_ACT_LINEAR};
    int dims[L + 1] = {IN, 6, 5, 3};
    kfac_net *net = make_net(IN, L, units, acts, KFAC_LOSS_SOFTMAX_XENT, B, 3);
    kfac_rng r;
    kfac_rng_seed(&r, 11);
    float x[IN * B], y[B * 3];
    fill_uniform(x, IN * B, -1.0f, 1.0f, &r);
    fill_targets(KFAC_LOSS_SOFTMAX_XENT, y, B, 3, &r);
    size_t np = kfac_net_n_params(net);
    float *grad = malloc(sizeof *grad * np);
    ck_assert_int_eq(kfac_net_forward(net, x, B), KFAC_OK);
    ck_assert_int_eq(kfac_net_backward(net, y, grad), KFAC_OK);

    /* reference forward: abar[l][n][j], s[l][n][i] */
    static double abar[L][B][8], s[L][B][8], g[L][B][8];
    for (int n = 0; n < B; n++) {
        for (int j = 0; j < IN; j++)
            abar[0][n][j] = x[n * IN + j];
        abar[0][n][IN] = 1.0;
    }
    for (int l = 0; l < L; l++) {
        int rows, cols;
        const float *w = kfac_net_layer_weights(net, l, &rows, &cols);
        ck_assert_int_eq(rows, dims[l + 1]);
        ck_assert_int_eq(cols, dims[l] + 1);
        for (int n = 0; n < B; n++)
            for (int i = 0; i < rows; i++) {
                double acc = 0.0;
                for (int j = 0; j < cols; j++)
                    acc += (double)w[i * cols + j] * abar[l][n][j];
                s[l][n][i] = acc;
                if (l + 1 < L) {
                    abar[l + 1][n][i] = act_f(acts[l], acc);
                    abar[l + 1][n][rows] = 1.0;
                }
            }
    }
    /* reference backward: per-example g = dl_n/ds, l_n the softmax
     * cross-entropy of example n alone (no 1/B) */
    for (int n = 0; n < B; n++) {
        double m = s[L - 1][n][0], sum = 0.0;
        for (int k = 1; k < 3; k++)
            m = fmax(m, s[L - 1][n][k]);
        for (int k = 0; k < 3; k++)
            sum += exp(s[L - 1][n][k] - m);
        for (int k = 0; k < 3; k++)
            g[L - 1][n][k] = exp(s[L - 1][n][k] - m) / sum - y[n * 3 + k];
    }
    for (int l = L - 1; l > 0; l--) {
        int rows, cols;
        const float *w = kfac_net_layer_weights(net, l, &rows, &cols);
        for (int n = 0; n < B; n++)
            for (int j = 0; j < cols - 1; j++) {
                double acc = 0.0;
                for (int i = 0; i < rows; i++)
                    acc += g[l][n][i] * w[i * cols + j];
                g[l - 1][n][j] = acc * act_d(acts[l - 1], s[l - 1][n][j]);
            }
    }
    for (int l = 0; l < L; l++) {
        const float *ra = kfac_net_layer_input(net, l), *rg = kfac_net_layer_pregrad(net, l);
        int in = dims[l] + 1, d = dims[l + 1];
        double gnorm = 0.0;
        for (int n = 0; n < B; n++) {
            for (int j = 0; j < in; j++)
                ck_assert_double_eq_tol(ra[n * in + j], abar[l][n][j], 1e-5);
            ck_assert_float_eq(ra[n * in + in - 1], 1.0f);
            for (int i = 0; i < d; i++) {
                ck_assert_double_eq_tol(rg[n * d + i], g[l][n][i], 1e-5);
                gnorm += g[l][n][i] * g[l][n][i];
            }
        }
        ck_assert_msg(gnorm > 1e-6, "layer %d: reference g is zero", l);
        /* the mean gradient is (1/B) sum_n g_n abar_n^T: the 1/B once */
        const float *gw = grad + kfac_net_layer_offset(net, l);
        for (int i = 0; i < d; i++)
            for (int j = 0; j < in; j++) {
                double acc = 0.0;
                for (int n = 0; n < B; n++)
                    acc += g[l][n][i] * abar[l][n][j];
                ck_assert_double_eq_tol(gw[i * in + j], acc / B, 1e-5);
            }
    }
    free(grad);
    kfac_net_free(net);
}
END_TEST

/* The scaling trap (docs/algorithm.md §2): an example's g does not depend on the batch
 * it is in, while its share of the batch gradient is 1/B of g abar^T. */
START_TEST(test_g_independent_of_batch)
{
    enum { IN = 6, B = 8 };
    int units[2] = {5, 4};
    kfac_activation acts[2] = {KFAC_ACT_RELU, KFAC_ACT_LINEAR};
    kfac_net *net = make_net(IN, 2, units, acts, KFAC_LOSS_SOFTMAX_XENT, B, 5);
    kfac_rng r;
    kfac_rng_seed(&r, 13);
    float x[IN * B], y[B * 4], g_batch[B * 4], g_one[4];
    fill_uniform(x, IN * B, -1.0f, 1.0f, &r);
    fill_targets(KFAC_LOSS_SOFTMAX_XENT, y, B, 4, &r);
    kfac_net_forward(net, x, B);
    kfac_net_backward(net, y, NULL);
    memcpy(g_batch, kfac_net_layer_pregrad(net, 1), sizeof g_batch);
    double norm = 0.0;
    for (int n = 0; n < B; n++) {
        kfac_net_forward(net, x + n * IN, 1);
        kfac_net_backward(net, y + n * 4, NULL);
        memcpy(g_one, kfac_net_layer_pregrad(net, 1), sizeof g_one);
        for (int i = 0; i < 4; i++) {
            ck_assert_float_eq_tol(g_batch[n * 4 + i], g_one[i], 1e-6f);
            norm += fabs(g_one[i]);
        }
    }
    ck_assert(norm > 1e-3);
    kfac_net_free(net);
}
END_TEST

START_TEST(test_init_kinds)
{
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = 300;
    s.n_layers = 2;
    s.layers[0] = (kfac_layer_spec){.units = 200, .activation = KFAC_ACT_RELU};
    s.layers[1] = (kfac_layer_spec){.units = 10, .activation = KFAC_ACT_LINEAR};
    for (int kind = 0; kind < KFAC_INIT_COUNT; kind++) {
        s.init = (kfac_init)kind;
        s.init_sigma = 0.05f;
        s.sparse_count = 15;
        kfac_net *a, *b;
        ck_assert_int_eq(kfac_net_new(&s, 4, &a), KFAC_OK);
        ck_assert_int_eq(kfac_net_new(&s, 4, &b), KFAC_OK);
        kfac_rng r1, r2;
        kfac_rng_seed(&r1, 99);
        kfac_rng_seed(&r2, 99);
        kfac_net_init_weights(a, &r1);
        kfac_net_init_weights(b, &r2);
        ck_assert_int_eq(memcmp(kfac_net_params(a), kfac_net_params(b), sizeof(float) * kfac_net_n_params(a)), 0);
        int rows, cols;
        const float *w = kfac_net_layer_weights(a, 0, &rows, &cols);
        double sum2 = 0.0, maxabs = 0.0;
        int nonzero = 0;
        for (int i = 0; i < rows; i++) {
            ck_assert_float_eq(w[i * cols + cols - 1], 0.0f); /* bias */
            int row_nz = 0;
            for (int j = 0; j < cols - 1; j++) {
                double v = w[i * cols + j];
                sum2 += v * v;
                maxabs = fmax(maxabs, fabs(v));
                row_nz += v != 0.0;
            }
            if (kind == KFAC_INIT_SPARSE)
                ck_assert_int_eq(row_nz, 15);
            nonzero += row_nz;
        }
        double sd = sqrt(sum2 / (rows * (cols - 1.0)));
        switch (kind) {
        case KFAC_INIT_GLOROT: { /* uniform +-r has sd r/sqrt(3) */
            double r = sqrt(6.0 / (300 + 200));
            ck_assert(maxabs <= r);
            ck_assert_double_eq_tol(sd, r / sqrt(3.0), 0.02 * r);
            break;
        }
        case KFAC_INIT_HE:
            ck_assert_double_eq_tol(sd, sqrt(2.0 / 300), 0.02 * sqrt(2.0 / 300));
            break;
        case KFAC_INIT_TRUNC_NORMAL: /* N(0,1) cut at 2 has sd 0.8796 */
            ck_assert(maxabs <= 2 * 0.05 + 1e-7);
            ck_assert_double_eq_tol(sd, 0.05 * 0.8796, 0.002);
            break;
        case KFAC_INIT_SPARSE:
            ck_assert_int_eq(nonzero, 200 * 15);
            break;
        }
        kfac_net_free(a);
        kfac_net_free(b);
    }
}
END_TEST

/* H_out v against central differences of the per-example loss gradient */
START_TEST(test_loss_hess_vec)
{
    enum { N = 3, D = 5 };
    for (int k = 0; k < KFAC_LOSS_COUNT; k++) {
        const kfac_loss_type *lt = &kfac_loss_types[k];
        kfac_rng r;
        kfac_rng_seed(&r, 21 + k);
        float z[N * D], v[N * D], y[N * D], hv[N * D], zp[N * D], zm[N * D], gp[N * D], gm[N * D];
        fill_uniform(z, N * D, -2.0f, 2.0f, &r);
        fill_uniform(v, N * D, -1.0f, 1.0f, &r);
        fill_targets((kfac_loss)k, y, N, D, &r);
        lt->hess_vec(z, v, hv, N, D);
        const float h = 1e-2f;
        for (int i = 0; i < N * D; i++) {
            zp[i] = z[i] + h * v[i];
            zm[i] = z[i] - h * v[i];
        }
        lt->grad(zp, y, gp, N, D);
        lt->grad(zm, y, gm, N, D);
        double norm = 0.0;
        for (int i = 0; i < N * D; i++) {
            double fd = (gp[i] - gm[i]) / (2.0 * h);
            ck_assert_msg(fabs(fd - hv[i]) < 1e-3, "%s: H v [%d] = %g, finite difference %g", lt->name, i,
                          hv[i], fd);
            norm += fabs(hv[i]);
        }
        ck_assert(norm > 1e-2);
    }
}
END_TEST

/* sampled targets follow the model: the mean of many draws of y is the
 * model's prediction (p, sigmoid(z) or z) */
START_TEST(test_loss_sample_mean)
{
    enum { D = 4, DRAWS = 20000 };
    float z[D] = {0.5f, -1.0f, 2.0f, 0.0f};
    for (int k = 0; k < KFAC_LOSS_COUNT; k++) {
        const kfac_loss_type *lt = &kfac_loss_types[k];
        kfac_rng r;
        kfac_rng_seed(&r, 5);
        double mean[D] = {0};
        float y[D];
        for (int t = 0; t < DRAWS; t++) {
            lt->sample(z, y, 1, D, kfac_rng_next(&r), 0);
            for (int j = 0; j < D; j++)
                mean[j] += y[j] / (double)DRAWS;
        }
        /* prediction: the gradient of the loss at y = 0 is mean(y|z) - 0 for
         * the softmax/sigmoid/squared losses when y sums to 1 ... so compute
         * it directly */
        double pred[D], m = 2.0, s = 0.0;
        for (int j = 0; j < D; j++)
            s += exp(z[j] - m);
        for (int j = 0; j < D; j++)
            pred[j] = k == KFAC_LOSS_SOFTMAX_XENT ? exp(z[j] - m) / s
                      : k == KFAC_LOSS_SIGMOID_XENT ? 1.0 / (1.0 + exp(-z[j]))
                                                    : z[j];
        for (int j = 0; j < D; j++)
            ck_assert_msg(fabs(mean[j] - pred[j]) < 0.02, "%s: mean sample %g, prediction %g", lt->name,
                          mean[j], pred[j]);
    }
}
END_TEST

START_TEST(test_net_errors)
{
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = 3;
    s.n_layers = 1;
    s.layers[0] = (kfac_layer_spec){.units = 2, .activation = KFAC_ACT_RELU};
    kfac_net *net = NULL;
    /* softmax belongs to the loss: a relu output layer is refused */
    ck_assert_int_eq(kfac_net_new(&s, 4, &net), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(net);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "linear"));
    s.layers[0].activation = KFAC_ACT_LINEAR;
    s.inputs = 0;
    ck_assert_int_eq(kfac_net_new(&s, 4, &net), KFAC_ERR_INVALID_ARG);
    s.inputs = 3;
    ck_assert_int_eq(kfac_net_new(&s, 0, &net), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_new(&s, 4, &net), KFAC_OK);
    float x[15] = {0}, y[10] = {0};
    ck_assert_int_eq(kfac_net_backward(net, y, NULL), KFAC_ERR_STATE);
    ck_assert_int_eq(kfac_net_forward(net, x, 5), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_forward(net, NULL, 2), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_forward(net, x, 4), KFAC_OK);
    ck_assert_int_eq(kfac_net_backward(net, y, NULL), KFAC_OK);
    kfac_net_free(net);
}
END_TEST

Suite *net_suite(void)
{
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("net");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_gradient_activation_loss, 0, KFAC_ACT_COUNT * KFAC_LOSS_COUNT);
    tcase_add_test(tc, test_gradient_deep);
    tcase_add_test(tc, test_recorded_abar_and_g);
    tcase_add_test(tc, test_g_independent_of_batch);
    tcase_add_test(tc, test_init_kinds);
    tcase_add_test(tc, test_loss_hess_vec);
    tcase_add_test(tc, test_loss_sample_mean);
    tcase_add_test(tc, test_net_errors);
    suite_add_tcase(s, tc);
    return s;
}
