/* test_cnn.c - convolutional networks through the layer table
 * (docs/algorithm.md §2.1, §3.1): central-difference gradients for every
 * activation and both poolings over several geometries (stride, padding,
 * non-square images and kernels, two convolutions in a row); the
 * convolution against a direct one written here; KFC's factors against
 * explicit sums over examples and positions; the R-op's F v against the
 * explicit Fisher; the backward pass that rebuilds its patches against
 * the one that keeps them; `kfac check` on the tiny CNN on real data; and
 * checkpoints of a CNN, under K-FAC and a first-order optimizer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "factors.h"
#include "fisher.h"
#include "kfac.h"
#include "net.h"
#include "optim.h"
#include "tests.h"

/* One geometry: the input image, then a convolution, an optional second
 * one, an optional pooling, and a dense output layer. */
typedef struct cnn_case {
    int h, w, c;
    int ch, kh, kw, stride, pad;  /* first convolution */
    int ch2, k2;                  /* second (ch2 0: none), stride 1, pad 0 */
    int pool, pool_stride;        /* pooling window (0: none) */
    int outputs;
} cnn_case;

static const cnn_case cases[] = {
    {6, 5, 2, 3, 3, 2, 1, 1, 0, 0, 2, 2, 4},           /* non-square image and kernel, pooled 2/2 */
    {7, 7, 1, 2, 3, 3, 2, 0, 0, 0, 2, 1, 3},           /* stride 2, overlapping pooling 2/1 */
    {5, 5, 2, 3, 3, 3, 1, KFAC_PAD_SAME, 2, 2, 0, 0, 3}, /* 'same', then a second convolution */
    {8, 6, 1, 2, 5, 3, 1, 2, 0, 0, 3, 2, 3},           /* pad 2, pooling 3/2 */
};
#define N_CASES (int)(sizeof cases / sizeof *cases)

static void cnn_spec(const cnn_case *c, kfac_layer_kind pool, kfac_activation act, kfac_loss loss,
                     kfac_net_spec *s)
{
    kfac_net_spec_init(s);
    s->inputs = c->h * c->w * c->c;
    s->input_h = c->h, s->input_w = c->w, s->input_c = c->c;
    s->loss = loss;
    s->init = KFAC_INIT_GLOROT;
    int n = 0;
    s->layers[n++] = (kfac_layer_spec){.kind = KFAC_LAYER_CONV, .units = c->ch, .activation = act,
                                        .kernel_h = c->kh, .kernel_w = c->kw, .stride = c->stride, .pad = c->pad};
    if (c->ch2)
        s->layers[n++] = (kfac_layer_spec){.kind = KFAC_LAYER_CONV, .units = c->ch2, .activation = act,
                                            .kernel_h = c->k2, .kernel_w = c->k2, .stride = 1};
    if (c->pool)
        s->layers[n++] = (kfac_layer_spec){.kind = pool, .activation = KFAC_ACT_LINEAR, .kernel_h = c->pool,
                                            .kernel_w = c->pool, .stride = c->pool_stride};
    s->layers[n++] = (kfac_layer_spec){.kind = KFAC_LAYER_DENSE, .units = c->outputs, .activation = KFAC_ACT_LINEAR};
    s->n_layers = n;
}

/* a network of the case, weights and biases drawn from seed */
static kfac_net *cnn_net(const kfac_net_spec *s, int batch, uint64_t seed)
{
    kfac_net *net = NULL;
    ck_assert_msg(kfac_net_new(s, batch, &net) == KFAC_OK, "%s", kfac_last_error());
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    ck_assert_int_eq(kfac_net_init_weights(net, &r), KFAC_OK);
    for (int l = 0; l < s->n_layers; l++) {
        int rows, cols;
        float *w = kfac_net_layer_weights(net, l, &rows, &cols);
        for (int i = 0; w && i < rows; i++)
            w[(size_t)i * cols + cols - 1] = 0.3f * (float)(kfac_rng_uniform(&r) - 0.5);
    }
    return net;
}

static void fill_onehot(float *y, int n, int d, kfac_rng *r)
{
    memset(y, 0, sizeof *y * (size_t)n * d);
    for (int i = 0; i < n; i++)
        y[(size_t)i * d + kfac_rng_below(r, (uint32_t)d)] = 1.0f;
}

/* _i: case x pooling kind x activation */
START_TEST(test_cnn_gradient)
{
    const cnn_case *c = &cases[_i % N_CASES];
    kfac_layer_kind pool = (_i / N_CASES) % 2 ? KFAC_LAYER_AVGPOOL : KFAC_LAYER_MAXPOOL;
    kfac_activation act = (kfac_activation)(_i / (2 * N_CASES));
    kfac_net_spec s;
    cnn_spec(c, pool, act, KFAC_LOSS_SOFTMAX_XENT, &s);
    const int batch = 3;
    kfac_net *net = cnn_net(&s, batch, 11 + (uint64_t)_i);
    kfac_rng r;
    kfac_rng_seed(&r, 5);
    int in = s.inputs;
    float *x = malloc(sizeof *x * (size_t)batch * in), y[3 * 4];
    test_fill_uniform(x, (size_t)batch * in, -1.0f, 1.0f, &r);
    fill_onehot(y, batch, c->outputs, &r);
    double err = test_gradient_error(net, x, y, batch);
    ck_assert_msg(err < 3e-3, "case %d, %s, %s: gradient relative error %g", _i % N_CASES,
                  kfac_layer_kind_name(pool), kfac_activation_name(act), err);
    free(x);
    kfac_net_free(net);
}
END_TEST

/* the squared loss and the sigmoid one too, through a convolution alone */
START_TEST(test_cnn_gradient_losses)
{
    for (int loss = 0; loss < KFAC_LOSS_COUNT; loss++) {
        kfac_net_spec s;
        cnn_spec(&cases[0], KFAC_LAYER_MAXPOOL, KFAC_ACT_TANH, (kfac_loss)loss, &s);
        const int batch = 2;
        kfac_net *net = cnn_net(&s, batch, 3);
        kfac_rng r;
        kfac_rng_seed(&r, 9);
        float x[2 * 60], y[2 * 4];
        test_fill_uniform(x, (size_t)batch * s.inputs, -1.0f, 1.0f, &r);
        if (loss == KFAC_LOSS_SOFTMAX_XENT)
            fill_onehot(y, batch, 4, &r);
        else
            test_fill_uniform(y, (size_t)batch * 4, 0.1f, 0.9f, &r);
        double err = test_gradient_error(net, x, y, batch);
        ck_assert_msg(err < 3e-3, "loss %s: gradient relative error %g", kfac_loss_name((kfac_loss)loss), err);
        kfac_net_free(net);
    }
}
END_TEST

/* input pixel (y, x, ch) of example b, zero outside the image */
static double pixel(const cnn_case *c, const float *x, int b, int y, int xx, int ch)
{
    if (y < 0 || y >= c->h || xx < 0 || xx >= c->w)
        return 0.0;
    return x[(size_t)b * c->h * c->w * c->c + ((size_t)y * c->w + xx) * c->c + ch];
}

/* The network's convolution (one layer, linear, squared loss so z is s)
 * against a direct one in double, W read as [out][ky][kx][in] + bias. */
START_TEST(test_conv_matches_direct)
{
    const cnn_case *c = &cases[_i];
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = c->h * c->w * c->c;
    s.input_h = c->h, s.input_w = c->w, s.input_c = c->c;
    s.loss = KFAC_LOSS_SQUARED;
    s.n_layers = 1;
    s.layers[0] = (kfac_layer_spec){.kind = KFAC_LAYER_CONV, .units = c->ch, .activation = KFAC_ACT_LINEAR,
                                     .kernel_h = c->kh, .kernel_w = c->kw, .stride = c->stride, .pad = c->pad};
    const int batch = 3;
    kfac_net *net = cnn_net(&s, batch, 21);
    kfac_rng r;
    kfac_rng_seed(&r, 8);
    float *x = malloc(sizeof *x * (size_t)batch * s.inputs);
    test_fill_uniform(x, (size_t)batch * s.inputs, -1.0f, 1.0f, &r);
    ck_assert_int_eq(kfac_net_forward(net, x, batch), KFAC_OK);
    int pad = c->pad == KFAC_PAD_SAME ? (c->kh - 1) / 2 : c->pad;
    int oh = (c->h + 2 * pad - c->kh) / c->stride + 1, ow = (c->w + 2 * pad - c->kw) / c->stride + 1;
    ck_assert_int_eq(kfac_net_outputs(net), oh * ow * c->ch);
    int rows, cols;
    const float *w = kfac_net_layer_weights(net, 0, &rows, &cols);
    ck_assert_int_eq(cols, c->kh * c->kw * c->c + 1);
    const float *z = kfac_net_output(net);
    double err = 0.0, norm = 0.0;
    for (int b = 0; b < batch; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int o = 0; o < c->ch; o++) {
                    const float *wo = w + (size_t)o * cols;
                    double acc = wo[cols - 1];
                    for (int ky = 0; ky < c->kh; ky++)
                        for (int kx = 0; kx < c->kw; kx++)
                            for (int ch = 0; ch < c->c; ch++)
                                acc += wo[(ky * c->kw + kx) * c->c + ch] *
                                       pixel(c, x, b, oy * c->stride + ky - pad, ox * c->stride + kx - pad, ch);
                    double got = z[(size_t)b * oh * ow * c->ch + ((size_t)oy * ow + ox) * c->ch + o];
                    err = fmax(err, fabs(got - acc));
                    norm = fmax(norm, fabs(acc));
                }
    ck_assert(norm > 0.1);
    ck_assert_msg(err < 1e-5 * norm, "case %d: conv differs from the direct one by %g", _i, err);
    free(x);
    kfac_net_free(net);
}
END_TEST

/* KFC (docs/algorithm.md §3.1): A = the mean over examples and positions of
 * abar abar^T with abar the patch and a 1, built here pixel by pixel;
 * G = the mean over examples of the sum over positions of g g^T. One
 * statistics round, so the running averages are these exactly. */
START_TEST(test_kfc_factors_explicit)
{
    const cnn_case *c = &cases[_i];
    kfac_net_spec s;
    cnn_spec(c, KFAC_LAYER_MAXPOOL, KFAC_ACT_RELU, KFAC_LOSS_SOFTMAX_XENT, &s);
    const int batch = 4;
    kfac_net *net = cnn_net(&s, batch, 31);
    kfac_rng r;
    kfac_rng_seed(&r, 4);
    float *x = malloc(sizeof *x * (size_t)batch * s.inputs), y[4 * 4];
    test_fill_uniform(x, (size_t)batch * s.inputs, -1.0f, 1.0f, &r);
    fill_onehot(y, batch, c->outputs, &r);
    ck_assert_int_eq(kfac_net_forward(net, x, batch), KFAC_OK);
    ck_assert_int_eq(kfac_net_backward(net, y, NULL), KFAC_OK);

    int rows, cols, P = kfac_net_layer_positions(net, 0);
    kfac_net_layer_weights(net, 0, &rows, &cols);
    int pad = c->pad == KFAC_PAD_SAME ? (c->kh - 1) / 2 : c->pad;
    int ow = (c->w + 2 * pad - c->kw) / c->stride + 1;
    ck_assert_int_eq(P, ((c->h + 2 * pad - c->kh) / c->stride + 1) * ow);
    kfac_factors *fc = NULL;
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.inversion = KFAC_INV_CHOLESKY;
    ck_assert_int_eq(kfac_factors_new(1, &cols, &rows, &P, batch, &kp, NULL, &fc), KFAC_OK);
    kfac_factors_begin_stats(fc);
    const float *g = kfac_net_layer_pregrad(net, 0);
    ck_assert_int_eq(kfac_factors_accumulate(fc, 0, kfac_net_layer_input(net, 0), cols, g, batch), KFAC_OK);

    double *A = calloc((size_t)cols * cols, sizeof *A), *G = calloc((size_t)rows * rows, sizeof *G);
    double *patch = malloc(sizeof *patch * (size_t)cols);
    for (int b = 0; b < batch; b++)
        for (int p = 0; p < P; p++) {
            int oy = p / ow, ox = p % ow;
            for (int ky = 0; ky < c->kh; ky++)
                for (int kx = 0; kx < c->kw; kx++)
                    for (int ch = 0; ch < c->c; ch++)
                        patch[(ky * c->kw + kx) * c->c + ch] =
                            pixel(c, x, b, oy * c->stride + ky - pad, ox * c->stride + kx - pad, ch);
            patch[cols - 1] = 1.0;
            for (int i = 0; i < cols; i++)
                for (int j = 0; j < cols; j++)
                    A[(size_t)i * cols + j] += patch[i] * patch[j] / ((double)batch * P);
            const float *gp = g + ((size_t)b * P + p) * rows;
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < rows; j++)
                    G[(size_t)i * rows + j] += (double)gp[i] * gp[j] / batch;
        }
    /* the upper triangles: the statistics update only those (§3) */
    const float *fa = kfac_factors_factor_a(fc, 0), *fg = kfac_factors_factor_g(fc, 0);
    double ea = 0, na = 0, eg = 0, ng = 0;
    for (int i = 0; i < cols; i++)
        for (int j = i; j < cols; j++) {
            ea = fmax(ea, fabs(fa[(size_t)i * cols + j] - A[(size_t)i * cols + j]));
            na = fmax(na, fabs(A[(size_t)i * cols + j]));
        }
    for (int i = 0; i < rows; i++)
        for (int j = i; j < rows; j++) {
            eg = fmax(eg, fabs(fg[(size_t)i * rows + j] - G[(size_t)i * rows + j]));
            ng = fmax(ng, fabs(G[(size_t)i * rows + j]));
        }
    ck_assert(na > 0.1 && ng > 1e-6);
    ck_assert_msg(ea < 1e-5 * na, "A differs by %g (of %g)", ea, na);
    ck_assert_msg(eg < 1e-4 * ng, "G differs by %g (of %g)", eg, ng);
    free(A), free(G), free(patch), free(x);
    kfac_factors_free(fc);
    kfac_net_free(net);
}
END_TEST

/* the R-op through convolutions and both poolings: F v against the
 * explicit Fisher's product (reverse mode only) */
START_TEST(test_cnn_fisher_vec_explicit)
{
    const cnn_case *c = &cases[_i % N_CASES];
    kfac_layer_kind pool = _i / N_CASES ? KFAC_LAYER_AVGPOOL : KFAC_LAYER_MAXPOOL;
    kfac_net_spec s;
    cnn_spec(c, pool, KFAC_ACT_TANH, KFAC_LOSS_SOFTMAX_XENT, &s);
    const int batch = 5;
    kfac_net *net = cnn_net(&s, batch, 41);
    kfac_rng r;
    kfac_rng_seed(&r, 6);
    float *x = malloc(sizeof *x * (size_t)batch * s.inputs);
    test_fill_uniform(x, (size_t)batch * s.inputs, -1.0f, 1.0f, &r);
    ck_assert_int_eq(kfac_net_forward(net, x, batch), KFAC_OK);
    size_t P = kfac_net_n_params(net);
    double *F = malloc(sizeof *F * P * P);
    ck_assert_int_eq(kfac_fisher_explicit(net, F), KFAC_OK);
    float *v = malloc(sizeof *v * P), *fv = malloc(sizeof *fv * P);
    test_fill_uniform(v, P, -1.0f, 1.0f, &r);
    kfac_fisher *f = NULL;
    ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
    ck_assert_int_eq(kfac_fisher_vec(f, net, v, fv), KFAC_OK);
    double err = 0, norm = 0;
    for (size_t i = 0; i < P; i++) {
        double acc = 0;
        for (size_t j = 0; j < P; j++)
            acc += F[i * P + j] * v[j];
        err += (acc - fv[i]) * (acc - fv[i]);
        norm += acc * acc;
    }
    ck_assert(sqrt(norm) > 1e-3);
    ck_assert_msg(sqrt(err / norm) < 1e-4, "case %d %s: F v relative error %g", _i % N_CASES,
                  kfac_layer_kind_name(pool), sqrt(err / norm));
    kfac_fisher_free(f);
    free(F), free(v), free(fv), free(x);
    kfac_net_free(net);
}
END_TEST

/* `kfac check` on nets/tiny-cnn.net, on real data: CG against the
 * explicit Fisher, and K-FAC's direction closer to the natural gradient
 * than the gradient's */
START_TEST(test_cnn_check_tiny)
{
    char path[600];
    snprintf(path, sizeof path, "%s/nets/tiny-cnn.net", test_root());
    kfac_net_spec s;
    kfac_train_params p;
    ck_assert_msg(kfac_netfile_load(path, &s, &p) == KFAC_OK, "%s", kfac_last_error());
    /* average pooling: smooth everywhere, so the central differences are
     * exact to rounding here whatever the warm-up's path (max pooling's
     * switches make them 1e-2 on this net) */
    ck_assert_int_eq(s.layers[1].kind, KFAC_LAYER_MAXPOOL);
    s.layers[1].kind = KFAC_LAYER_AVGPOOL;
    kfac_dataset d; /* full-size images: the check pools them as the net file says */
    ck_assert_msg(kfac_mnist_load(test_data_dir(), "train", &d) == KFAC_OK, "%s", kfac_last_error());
    kfac_check_options o;
    kfac_check_options_init(&o);
    o.warmup_epochs = 1;
    o.examples = 300;
    p.epochs = 1;
    kfac_check_report r;
    ck_assert_msg(kfac_check_with(&s, &p, &d, &o, &r) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(r.explicit_fisher, 1);
    ck_assert_int_eq(r.n_params, 4 * 10 + 10 * 197);
    ck_assert_int_eq(r.n_layers, 2);
    ck_assert_msg(r.cg_rel_err < 1e-3, "CG against Cholesky: %g", r.cg_rel_err);
    ck_assert_msg(r.fvp_rel_err < 1e-4, "R-op against the explicit F: %g", r.fvp_rel_err);
    ck_assert_msg(r.grad_rel_err < 2e-3, "gradient check %g", r.grad_rel_err);
    ck_assert_msg(r.cos_kfac > r.cos_grad + 0.05, "K-FAC's cosine %g, the gradient's %g", r.cos_kfac, r.cos_grad);
    ck_assert(r.model_exact < 0 && r.model_kfac < r.model_grad);
    kfac_dataset_free(&d);
}
END_TEST

/* The backward pass that rebuilds its patches (a first-order trainer's,
 * kfac_net_keep_inputs 0) against the one that reads the kept patches:
 * the gradient agrees to rounding (dW is summed in another order), and is
 * the same bit for bit on 1 thread and on 2, as its chunks promise. 37
 * examples: chunks of 2 and 3 examples, so each chunk sums several. */
START_TEST(test_cnn_rebuilt_patches)
{
    const cnn_case *c = &cases[_i];
    kfac_net_spec s;
    cnn_spec(c, KFAC_LAYER_MAXPOOL, KFAC_ACT_TANH, KFAC_LOSS_SOFTMAX_XENT, &s);
    const int batch = 37;
    kfac_net *net = cnn_net(&s, batch, 40 + (uint64_t)_i);
    kfac_rng r;
    kfac_rng_seed(&r, 6);
    size_t n = kfac_net_n_params(net);
    float *x = malloc(sizeof *x * (size_t)batch * s.inputs), *y = malloc(sizeof *y * (size_t)batch * c->outputs);
    float *kept = malloc(sizeof *kept * n), *rebuilt = malloc(sizeof *rebuilt * n), *one = malloc(sizeof *one * n);
    test_fill_uniform(x, (size_t)batch * s.inputs, -1.0f, 1.0f, &r);
    fill_onehot(y, batch, c->outputs, &r);
    int threads = kfac_get_threads();
    kfac_set_threads(2);
    ck_assert_int_eq(kfac_net_forward(net, x, batch), KFAC_OK);
    ck_assert_int_eq(kfac_net_backward(net, y, kept), KFAC_OK);
    kfac_net_keep_inputs(net, 0);
    ck_assert_int_eq(kfac_net_forward(net, x, batch), KFAC_OK);
    ck_assert_int_eq(kfac_net_backward(net, y, rebuilt), KFAC_OK);
    kfac_set_threads(1);
    ck_assert_int_eq(kfac_net_forward(net, x, batch), KFAC_OK);
    ck_assert_int_eq(kfac_net_backward(net, y, one), KFAC_OK);
    kfac_set_threads(threads); /* the next test's, under CK_FORK=no too */
    double err = 0.0, norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)rebuilt[i] - kept[i]));
        norm = fmax(norm, fabs((double)kept[i]));
    }
    ck_assert_msg(norm > 1e-3, "case %d: gradient is (nearly) zero: %g", _i, norm);
    ck_assert_msg(err <= 1e-5 * norm, "case %d: the rebuilt patches' gradient differs by %g (largest %g)", _i, err,
                  norm);
    ck_assert_msg(memcmp(rebuilt, one, sizeof *one * n) == 0, "case %d: 1 thread and 2 differ", _i);
    free(x), free(y), free(kept), free(rebuilt), free(one);
    kfac_net_free(net);
}
END_TEST

/* n random 5x5x2 images (as MNIST's rows x cols: 5 x 10) of 3 classes */
static kfac_dataset random_images(int n, uint64_t seed)
{
    kfac_dataset d = {0};
    d.n = n, d.rows = 5, d.cols = 10, d.features = 50, d.classes = 3;
    d.x = malloc(sizeof *d.x * (size_t)n * 50);
    d.labels = malloc(sizeof *d.labels * (size_t)n);
    ck_assert(d.x && d.labels);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    test_fill_uniform(d.x, (size_t)n * 50, 0.0f, 1.0f, &r);
    for (int i = 0; i < n; i++)
        d.labels[i] = (uint8_t)kfac_rng_below(&r, 3);
    return d;
}

/* Whether the first layer's forward pass kept its patches, step by step
 * (the progress callback runs after each step). */
typedef struct kept_log {
    kfac_trainer *t;
    int n, kept[64];
} kept_log;

static int log_kept(void *user, long step, long steps)
{
    (void)step, (void)steps;
    kept_log *k = user;
    if (k->n < 64)
        k->kept[k->n++] = kfac_trainer_net(k->t)->layers[0].keep_abar;
    return 0;
}

/* The trainer keeps a convolution's patches exactly for the steps that
 * read them: K-FAC's statistics rounds (every cov_every-th step from the
 * first), every step of the quadratic rule, no step of a first-order
 * method. */
START_TEST(test_cnn_patches_kept_when_read)
{
    kfac_net_spec s;
    cnn_spec(&cases[2], KFAC_LAYER_MAXPOOL, KFAC_ACT_RELU, KFAC_LOSS_SOFTMAX_XENT, &s);
    s.layers[s.n_layers - 1].units = 3;
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.optimizer = _i == 2 ? KFAC_OPT_MOMENTUM : KFAC_OPT_KFAC;
    if (_i == 1) {
        p.kfac.rule = KFAC_RULE_QUADRATIC;
        p.kfac.damping = 1.0f;
    }
    p.batch = 10;
    p.kfac.cov_every = 3;
    p.kfac.inv_every = 3;
    kfac_dataset d = random_images(100, 8);
    kept_log k = {0};
    ck_assert_msg(kfac_trainer_new(&s, &p, &d, &k.t) == KFAC_OK, "%s", kfac_last_error());
    kfac_epoch_stats es;
    for (int e = 0; e < 2; e++)
        ck_assert_msg(kfac_trainer_epoch(k.t, log_kept, &k, &es) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(k.n, 20);
    for (int i = 0; i < k.n; i++) {
        int want = _i == 0 ? i % 3 == 0 : _i == 1;
        ck_assert_msg(k.kept[i] == want, "case %d, step %d: patches kept %d, want %d", _i, i + 1, k.kept[i], want);
    }
    kfac_trainer_free(k.t);
    kfac_dataset_free(&d);
}
END_TEST

/* K-FAC between statistics rounds reads a convolution's gradient from the
 * backward pass that rebuilt its patches instead of forming it from the
 * kept ones: the steps agree with the all-kept steps to rounding (dW is
 * summed in another order), every third one dropping, on 2 threads; a
 * step due to read the patches refuses a pass that dropped them. */
START_TEST(test_kfac_dropped_patches_steps)
{
    const cnn_case *c = &cases[_i];
    kfac_net_spec s;
    cnn_spec(c, KFAC_LAYER_AVGPOOL, KFAC_ACT_TANH, KFAC_LOSS_SOFTMAX_XENT, &s);
    enum { B = 24, STEPS = 5 };
    kfac_net *na = cnn_net(&s, B, 70), *nb = cnn_net(&s, B, 70);
    size_t n = kfac_net_n_params(na);
    kfac_train_params tp;
    kfac_train_params_init(&tp);
    tp.optimizer = KFAC_OPT_KFAC;
    tp.batch = B;
    tp.kfac.cov_every = 3;
    tp.kfac.inv_every = 3;
    kfac_optimizer *oa, *ob;
    ck_assert_msg(kfac_optimizer_new_for_net(&tp, na, NULL, &oa) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_msg(kfac_optimizer_new_for_net(&tp, nb, NULL, &ob) == KFAC_OK, "%s", kfac_last_error());
    float *x = malloc(sizeof *x * (size_t)B * s.inputs), *y = malloc(sizeof *y * (size_t)B * c->outputs);
    float *ga = malloc(sizeof *ga * n), *t0 = malloc(sizeof *t0 * n);
    kfac_rng r, ra, rb;
    kfac_rng_seed(&r, 9), kfac_rng_seed(&ra, 10), kfac_rng_seed(&rb, 10);
    int threads = kfac_get_threads();
    kfac_set_threads(2);
    for (int step = 0; step < STEPS; step++) {
        test_fill_uniform(x, (size_t)B * s.inputs, -1.0f, 1.0f, &r);
        fill_onehot(y, B, c->outputs, &r);
        memcpy(t0, kfac_net_params(nb), sizeof *t0 * n);
        /* a: as the trainer steps */
        int keep = kfac_optimizer_keeps_inputs(oa), dropped = -1;
        ck_assert_int_eq(keep, step % 3 == 0);
        kfac_net_keep_inputs(na, keep);
        ck_assert_int_eq(kfac_net_forward(na, x, B), KFAC_OK);
        ck_assert_int_eq(kfac_net_backward_dropped(na, y, ga, 1.0f / B, &dropped), KFAC_OK);
        ck_assert_int_eq(dropped, !keep);
        kfac_step_ctx ca = {na, y, B, &ra, 0, B, dropped ? ga : NULL};
        if (dropped) { /* without the gradient the step would need the patches */
            kfac_step_ctx bare = ca;
            bare.grad_dropped = NULL;
            ck_assert_int_eq(kfac_optimizer_step_ctx(oa, kfac_net_params(na), NULL, &bare), KFAC_ERR_STATE);
        }
        ck_assert_msg(kfac_optimizer_step_ctx(oa, kfac_net_params(na), NULL, &ca) == KFAC_OK, "%s",
                      kfac_last_error());
        /* b: every patch kept */
        ck_assert_int_eq(kfac_net_forward(nb, x, B), KFAC_OK);
        ck_assert_int_eq(kfac_net_backward(nb, y, NULL), KFAC_OK);
        kfac_step_ctx cb = {nb, y, B, &rb, 0, B, NULL};
        ck_assert_msg(kfac_optimizer_step_ctx(ob, kfac_net_params(nb), NULL, &cb) == KFAC_OK, "%s",
                      kfac_last_error());
        const float *pa = kfac_net_params(na), *pb = kfac_net_params(nb);
        double err = 0.0, moved = 0.0;
        for (size_t i = 0; i < n; i++) {
            err = fmax(err, fabs((double)pa[i] - pb[i]));
            moved = fmax(moved, fabs((double)pb[i] - t0[i]));
        }
        ck_assert_msg(moved > 1e-6, "case %d, step %d: the step moved nothing (%g)", _i, step + 1, moved);
        ck_assert_msg(err <= 1e-4 * moved, "case %d, step %d: weights differ by %g, the step is %g", _i, step + 1,
                      err, moved);
    }
    kfac_set_threads(threads);
    kfac_optimizer_free(oa), kfac_optimizer_free(ob);
    kfac_net_free(na), kfac_net_free(nb);
    free(x), free(y), free(ga), free(t0);
}
END_TEST

/* a CNN's trainer saved mid-run and resumed continues bit for bit; a
 * dense network refuses its checkpoint, naming both */
START_TEST(test_cnn_checkpoint_resume)
{
    kfac_net_spec s;
    cnn_spec(&cases[2], KFAC_LAYER_MAXPOOL, KFAC_ACT_RELU, KFAC_LOSS_SOFTMAX_XENT, &s);
    s.layers[s.n_layers - 1].units = 3;
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.optimizer = _i ? KFAC_OPT_NESTEROV : KFAC_OPT_KFAC;
    p.batch = 16;
    p.kfac.cov_every = 2;
    p.kfac.inv_every = 3;
    p.seed = 5;
    kfac_dataset d = random_images(200, 2);
    kfac_trainer *a = NULL, *b = NULL;
    ck_assert_msg(kfac_trainer_new(&s, &p, &d, &a) == KFAC_OK, "%s", kfac_last_error());
    kfac_epoch_stats ea, eb;
    ck_assert_int_eq(kfac_trainer_epoch(a, NULL, NULL, &ea), KFAC_OK);
    char ck[700];
    snprintf(ck, sizeof ck, "%s/cnn.ckpt", test_tmpdir());
    ck_assert_msg(kfac_trainer_save(a, ck) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_trainer_epoch(a, NULL, NULL, &ea), KFAC_OK);
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &d, &b), KFAC_OK);
    ck_assert_msg(kfac_trainer_load(b, ck) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_trainer_epoch(b, NULL, NULL, &eb), KFAC_OK);
    ck_assert(ea.train_loss == eb.train_loss);
    size_t n = kfac_net_n_params(kfac_trainer_net(a));
    ck_assert_int_eq(memcmp(kfac_net_params(kfac_trainer_net(a)), kfac_net_params(kfac_trainer_net(b)),
                            sizeof(float) * n), 0);
    /* another kernel: refused, both networks named */
    kfac_trainer_free(b);
    s.layers[0].kernel_h = s.layers[0].kernel_w = 1;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &d, &b), KFAC_OK);
    ck_assert_int_eq(kfac_trainer_load(b, ck), KFAC_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "conv3(3x3/1,same)"));
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "conv3(1x1/1,same)"));
    kfac_trainer_free(a);
    kfac_trainer_free(b);
    kfac_dataset_free(&d);
}
END_TEST

/* a convolution's rows (batch x positions) are BLAS's int: refused past
 * it, before anything is allocated; one batch less than the limit
 * passes the check (and is not allocated here) */
START_TEST(test_cnn_rows_fit_an_int)
{
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = 64 * 64, s.input_h = s.input_w = 64, s.input_c = 1;
    s.n_layers = 2;
    s.layers[0] = (kfac_layer_spec){.kind = KFAC_LAYER_CONV, .units = 1, .activation = KFAC_ACT_RELU,
                                     .kernel_h = 3, .kernel_w = 3, .pad = KFAC_PAD_SAME};
    s.layers[1] = (kfac_layer_spec){.kind = KFAC_LAYER_DENSE, .units = 2, .activation = KFAC_ACT_LINEAR};
    kfac_net *net = NULL;
    int limit = (int)(2147483647LL / 4096); /* 524287 batches of 4096 positions */
    ck_assert_int_eq(kfac_net_new(&s, limit + 1, &net), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(net);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "layer 1's 4096 positions make 2^31 rows or more"));
    ck_assert_int_eq(kfac_net_new(&s, 8, &net), KFAC_OK);
    kfac_net_free(net);
}
END_TEST

Suite *cnn_suite(void)
{
    Suite *s = suite_create("cnn");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_cnn_gradient, 0, N_CASES * 2 * KFAC_ACT_COUNT);
    tcase_add_test(tc, test_cnn_gradient_losses);
    tcase_add_loop_test(tc, test_conv_matches_direct, 0, N_CASES);
    tcase_add_loop_test(tc, test_kfc_factors_explicit, 0, N_CASES);
    tcase_add_loop_test(tc, test_cnn_fisher_vec_explicit, 0, 2 * N_CASES);
    tcase_add_loop_test(tc, test_cnn_rebuilt_patches, 0, N_CASES);
    tcase_add_loop_test(tc, test_cnn_patches_kept_when_read, 0, 3);
    tcase_add_loop_test(tc, test_kfac_dropped_patches_steps, 0, N_CASES);
    tcase_add_loop_test(tc, test_cnn_checkpoint_resume, 0, 2);
    tcase_add_test(tc, test_cnn_rows_fit_an_int);
    suite_add_tcase(s, tc);
    TCase *real = tcase_create("real data");
    tcase_set_timeout(real, 600);
    tcase_set_tags(real, "training"); /* a warm-up epoch: not under valgrind */
    tcase_add_test(real, test_cnn_check_tiny);
    suite_add_tcase(s, real);
    return s;
}
