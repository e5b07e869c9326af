/* test_train.c - the trainer end to end on a slice of the real
 * Fashion-MNIST: every optimizer reaches a stated test accuracy, runs are
 * reproducible, the autoencoder's reconstruction error falls, bad set-ups
 * are refused, and an epoch flushes denormals without leaving the caller's
 * floating-point modes changed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <omp.h>
#include <xmmintrin.h>
#endif

#include "ckio.h"
#include "kfac.h"
#include "optim.h"
#include "train.h"
#include "tests.h"

enum { TRAIN_N = 6000, TEST_N = 2000 };

static kfac_dataset train_all, test_all;

static void load_data(void)
{
    ck_assert_msg(kfac_mnist_load(test_data_dir(), "train", &train_all) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_msg(kfac_mnist_load(test_data_dir(), "t10k", &test_all) == KFAC_OK, "%s", kfac_last_error());
}

static void free_data(void)
{
    kfac_dataset_free(&train_all);
    kfac_dataset_free(&test_all);
}

/* the first n examples, sharing the buffers */
static kfac_dataset slice(const kfac_dataset *d, int n)
{
    kfac_dataset s = *d;
    s.n = n;
    return s;
}

static void small_spec(kfac_net_spec *s, kfac_train_params *p)
{
    char path[512];
    snprintf(path, sizeof path, "%s/nets/small.net", test_root());
    ck_assert_msg(kfac_netfile_load(path, s, p) == KFAC_OK, "%s", kfac_last_error());
}

/* s: one linear layer, inputs -> classes (softmax cross-entropy) */
static void linear_spec(kfac_net_spec *s, int inputs, int classes)
{
    kfac_net_spec_init(s);
    s->inputs = inputs;
    s->n_layers = 1;
    s->layers[0] = (kfac_layer_spec){.units = classes, .activation = KFAC_ACT_LINEAR};
}

/* Each optimizer, with a learning rate suited to it, trains nets/small.net
 * for 3 epochs on 6000 images to at least 78% test accuracy (an untrained
 * net scores about 10%). */
START_TEST(test_every_optimizer_learns)
{
    static const float lr[KFAC_OPT_COUNT] = {
        [KFAC_OPT_SGD] = 0.2f, [KFAC_OPT_MOMENTUM] = 0.02f, [KFAC_OPT_NESTEROV] = 0.02f,
        [KFAC_OPT_ADAM] = 0.002f, [KFAC_OPT_KFAC] = 0.03f};
    kfac_set_threads(2);
    load_data();
    kfac_dataset tr = slice(&train_all, TRAIN_N), te = slice(&test_all, TEST_N);
    kfac_net_spec s;
    kfac_train_params p;
    small_spec(&s, &p);
    p.optimizer = (kfac_optimizer_kind)_i;
    p.optim.lr = lr[_i];
    p.epochs = 3;
    kfac_trainer *t;
    ck_assert_msg(kfac_trainer_new(&s, &p, &tr, &t) == KFAC_OK, "%s", kfac_last_error());
    double loss0, acc0, loss, acc;
    ck_assert_int_eq(kfac_evaluate(kfac_trainer_net(t), &te, &loss0, &acc0), KFAC_OK);
    kfac_epoch_stats st = {0};
    for (int e = 0; e < p.epochs; e++)
        ck_assert_msg(kfac_trainer_epoch(t, NULL, NULL, &st) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_evaluate(kfac_trainer_net(t), &te, &loss, &acc), KFAC_OK);
    fprintf(stderr, "  %-9s test loss %.4f -> %.4f, accuracy %.4f -> %.4f, train loss %.4f, %.2f s\n",
            kfac_optimizer_name(p.optimizer), loss0, loss, acc0, acc, st.train_loss, st.seconds);
    ck_assert_int_eq(st.epoch, 3);
    ck_assert(st.seconds > 0.0);
    ck_assert_msg(acc >= 0.78, "%s: test accuracy %.4f < 0.78", kfac_optimizer_name(p.optimizer), acc);
    ck_assert_msg(loss < 0.7 * loss0, "%s: test loss %.4f from %.4f", kfac_optimizer_name(p.optimizer), loss,
                  loss0);
    kfac_trainer_free(t);
    free_data();
}
END_TEST

/* Same seed and thread count: bit-identical weights; another seed: not. */
START_TEST(test_reproducible)
{
    kfac_set_threads(2);
    load_data();
    kfac_dataset tr = slice(&train_all, 2000);
    kfac_net_spec s;
    kfac_train_params p;
    small_spec(&s, &p);
    kfac_trainer *a, *b, *c;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &a), KFAC_OK);
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &b), KFAC_OK);
    p.seed = 2;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &c), KFAC_OK);
    for (int e = 0; e < 2; e++) {
        ck_assert_int_eq(kfac_trainer_epoch(a, NULL, NULL, NULL), KFAC_OK);
        ck_assert_int_eq(kfac_trainer_epoch(b, NULL, NULL, NULL), KFAC_OK);
        ck_assert_int_eq(kfac_trainer_epoch(c, NULL, NULL, NULL), KFAC_OK);
    }
    kfac_net *na = kfac_trainer_net(a), *nb = kfac_trainer_net(b), *nc = kfac_trainer_net(c);
    size_t bytes = sizeof(float) * kfac_net_n_params(na);
    ck_assert_int_eq(memcmp(kfac_net_params(na), kfac_net_params(nb), bytes), 0);
    ck_assert_int_ne(memcmp(kfac_net_params(na), kfac_net_params(nc), bytes), 0);
    kfac_trainer_free(a);
    kfac_trainer_free(b);
    kfac_trainer_free(c);
    free_data();
}
END_TEST

/* nets/tiny.net (pool = 4: 49 inputs) through the API alone, as the
 * README's example does it: kfac_netfile_load, the full-size images, the
 * trainer, kfac_evaluate. It learns, and the library's pooling is
 * kfac_dataset_pool's: data pooled beforehand gives the same weights bit
 * for bit and the same test figures. Images that pool to another size
 * are refused, naming the pooling. */
START_TEST(test_tiny_net_pools_through_api)
{
    kfac_set_threads(2);
    load_data();
    kfac_dataset tr = slice(&train_all, TRAIN_N), te = slice(&test_all, TEST_N), tr_pooled, te_pooled;
    char path[512];
    snprintf(path, sizeof path, "%s/nets/tiny.net", test_root());
    kfac_net_spec s;
    kfac_train_params p;
    ck_assert_msg(kfac_netfile_load(path, &s, &p) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(s.input_pool, 4);
    p.epochs = 2;
    kfac_trainer *t, *u;
    ck_assert_msg(kfac_trainer_new(&s, &p, &tr, &t) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_dataset_pool(&tr, 4, &tr_pooled), KFAC_OK);
    ck_assert_int_eq(kfac_dataset_pool(&te, 4, &te_pooled), KFAC_OK);
    ck_assert_msg(kfac_trainer_new(&s, &p, &tr_pooled, &u) == KFAC_OK, "%s", kfac_last_error());
    double loss0, acc0, loss, acc, loss_u, acc_u;
    ck_assert_msg(kfac_evaluate(kfac_trainer_net(t), &te, &loss0, &acc0) == KFAC_OK, "%s", kfac_last_error());
    for (int e = 0; e < p.epochs; e++) {
        ck_assert_msg(kfac_trainer_epoch(t, NULL, NULL, NULL) == KFAC_OK, "%s", kfac_last_error());
        ck_assert_int_eq(kfac_trainer_epoch(u, NULL, NULL, NULL), KFAC_OK);
    }
    ck_assert_int_eq(kfac_evaluate(kfac_trainer_net(t), &te, &loss, &acc), KFAC_OK);
    ck_assert_int_eq(kfac_evaluate(kfac_trainer_net(u), &te_pooled, &loss_u, &acc_u), KFAC_OK);
    fprintf(stderr, "  tiny.net through the API: test loss %.4f -> %.4f, accuracy %.4f -> %.4f\n", loss0, loss, acc0,
            acc);
    ck_assert_msg(acc >= 0.7 && loss < 0.7 * loss0, "accuracy %.4f, loss %.4f from %.4f", acc, loss, loss0);
    kfac_net *nt = kfac_trainer_net(t), *nu = kfac_trainer_net(u);
    ck_assert_int_eq(memcmp(kfac_net_params(nt), kfac_net_params(nu), sizeof(float) * kfac_net_n_params(nt)), 0);
    ck_assert(loss == loss_u && acc == acc_u);
    kfac_trainer_free(t);
    kfac_trainer_free(u);
    kfac_dataset_free(&tr_pooled);
    kfac_dataset_free(&te_pooled);
    /* 20x20 images pool 4 to 5x5 = 25 features, not 49 */
    kfac_dataset odd = tr;
    odd.rows = odd.cols = 20;
    odd.features = 400;
    odd.n = 100;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &odd, &t), KFAC_ERR_SHAPE);
    ck_assert_msg(strstr(kfac_last_error(), "network takes 49 inputs, or images that pool 4 makes that size"), "%s",
                  kfac_last_error());
    free_data();
}
END_TEST

/* A small sigmoid autoencoder (the images are the targets): its training
 * and test reconstruction errors fall. */
START_TEST(test_autoencoder_learns)
{
    kfac_set_threads(2);
    load_data();
    kfac_dataset tr = slice(&train_all, 3000), te = slice(&test_all, 1000);
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = 784;
    s.n_layers = 3;
    s.layers[0] = (kfac_layer_spec){.units = 64, .activation = KFAC_ACT_SIGMOID};
    s.layers[1] = (kfac_layer_spec){.units = 16, .activation = KFAC_ACT_LINEAR};
    s.layers[2] = (kfac_layer_spec){.units = 784, .activation = KFAC_ACT_LINEAR};
    s.loss = KFAC_LOSS_SIGMOID_XENT;
    s.init = KFAC_INIT_SPARSE;
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.optimizer = KFAC_OPT_ADAM;
    p.optim.lr = 0.003f;
    p.batch = 100;
    kfac_trainer *t;
    ck_assert_msg(kfac_trainer_new(&s, &p, &tr, &t) == KFAC_OK, "%s", kfac_last_error());
    double loss0, err0, loss, err;
    ck_assert_int_eq(kfac_evaluate(kfac_trainer_net(t), &te, &loss0, &err0), KFAC_OK);
    kfac_epoch_stats first, last;
    ck_assert_int_eq(kfac_trainer_epoch(t, NULL, NULL, &first), KFAC_OK);
    for (int e = 0; e < 4; e++)
        ck_assert_int_eq(kfac_trainer_epoch(t, NULL, NULL, &last), KFAC_OK);
    ck_assert_int_eq(kfac_evaluate(kfac_trainer_net(t), &te, &loss, &err), KFAC_OK);
    fprintf(stderr, "  autoencoder: test loss %.2f -> %.2f, squared error %.2f -> %.2f\n", loss0, loss, err0,
            err);
    ck_assert(last.train_loss < first.train_loss);
    ck_assert_msg(err < 0.6 * err0, "reconstruction error %.3f from %.3f", err, err0);
    kfac_trainer_free(t);
    free_data();
}
END_TEST

/* docs/algorithm.md §9 in small: on a slice of the deep autoencoder problem (sigmoid
 * units, a linear code, Bernoulli cross-entropy on the pixels) K-FAC
 * reaches a lower training loss than SGD with Nesterov momentum at the best
 * learning rate of a grid, in the same number of steps (60). */
static double autoencoder_loss(const kfac_dataset *d, kfac_optimizer_kind kind, float lr)
{
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = 784;
    s.n_layers = 4;
    s.loss = KFAC_LOSS_SIGMOID_XENT;
    s.init = KFAC_INIT_SPARSE;
    s.layers[0] = (kfac_layer_spec){.units = 64, .activation = KFAC_ACT_SIGMOID};
    s.layers[1] = (kfac_layer_spec){.units = 16, .activation = KFAC_ACT_LINEAR};
    s.layers[2] = (kfac_layer_spec){.units = 64, .activation = KFAC_ACT_SIGMOID};
    s.layers[3] = (kfac_layer_spec){.units = 784, .activation = KFAC_ACT_LINEAR};
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.optimizer = kind;
    p.optim.lr = lr;
    p.batch = 100;
    /* the loss sums 784 pixels: a KL budget of 1e-3 (made for a mean
     * cross-entropy over 10 classes) would pin the step */
    p.kfac.kl_clip = 0.1f;
    p.kfac.cov_every = 1;
    p.kfac.inv_every = 10;
    kfac_trainer *t;
    ck_assert_msg(kfac_trainer_new(&s, &p, d, &t) == KFAC_OK, "%s", kfac_last_error());
    for (int e = 0; e < 3; e++)
        ck_assert_msg(kfac_trainer_epoch(t, NULL, NULL, NULL) == KFAC_OK, "%s", kfac_last_error());
    double loss;
    ck_assert_int_eq(kfac_evaluate(kfac_trainer_net(t), d, &loss, NULL), KFAC_OK);
    kfac_trainer_free(t);
    return loss;
}

START_TEST(test_kfac_beats_sgd_on_autoencoder)
{
    kfac_set_threads(2);
    load_data();
    kfac_dataset tr = slice(&train_all, 2000);
    double best_sgd = INFINITY;
    static const float grid[] = {0.003f, 0.01f, 0.03f};
    for (int i = 0; i < 3; i++)
        best_sgd = fmin(best_sgd, autoencoder_loss(&tr, KFAC_OPT_NESTEROV, grid[i]));
    double kfac = autoencoder_loss(&tr, KFAC_OPT_KFAC, 0.03f);
    fprintf(stderr, "  autoencoder slice, 60 steps: training loss K-FAC %.1f, best Nesterov SGD %.1f\n", kfac,
            best_sgd);
    ck_assert_msg(kfac < 0.85 * best_sgd, "K-FAC %.2f against SGD %.2f", kfac, best_sgd);
    free_data();
}
END_TEST

START_TEST(test_trainer_refuses_bad_setups)
{
    load_data();
    kfac_dataset tr = slice(&train_all, 500);
    kfac_net_spec s;
    kfac_train_params p;
    small_spec(&s, &p);
    kfac_trainer *t = NULL;
    p.batch = 501; /* larger than the data */
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &t), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "larger"));
    p.batch = 64;
    s.inputs = 100; /* images of 784 pixels */
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &t), KFAC_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "784"));
    s.inputs = 784;
    s.layers[1].units = 7; /* 10 classes */
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &t), KFAC_ERR_SHAPE);
    s.layers[1].units = 10;
    p.optim.lr = -1.0f;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &t), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(t);
    free_data();
}
END_TEST

/* An absurd learning rate on a linear hidden layer makes the weights grow
 * geometrically until the loss overflows: the epoch stops with
 * KFAC_ERR_NUMERIC rather than carrying NaN on. (ReLU units would just die
 * and keep the loss finite.) */
/* The kl_clip rule's damping schedule (docs/algorithm.md §5.1): with a
 * half-life h the damping after t steps is damping 2^(-(t-1)/h), the
 * inversions use it (so the weights differ from a constant damping's), and
 * h = 0 keeps it. */
START_TEST(test_damping_half_life)
{
    load_data();
    kfac_dataset tr = slice(&train_all, 1000);
    kfac_net_spec s;
    kfac_train_params p;
    small_spec(&s, &p);
    p.optimizer = KFAC_OPT_KFAC;
    p.batch = 100;
    p.kfac.cov_every = 2; /* inversions at steps 1, 3, ..., 9 */
    float *theta[2];
    for (int run = 0; run < 2; run++) {
        p.kfac.damping_half_life = run ? 4 : 0;
        kfac_trainer *t;
        ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &t), KFAC_OK);
        ck_assert_msg(kfac_trainer_epoch(t, NULL, NULL, NULL) == KFAC_OK, "%s", kfac_last_error());
        kfac_kfac_stats k;
        ck_assert_int_eq(kfac_trainer_kfac_stats(t, &k), KFAC_OK);
        double want = run ? p.kfac.damping * pow(2.0, -(10 - 1) / 4.0) : p.kfac.damping;
        ck_assert_msg(fabs(k.damping - want) <= 1e-12 * want, "half-life %d: damping %.17g, want %.17g",
                      p.kfac.damping_half_life, k.damping, want);
        kfac_net *net = kfac_trainer_net(t);
        size_t n = kfac_net_n_params(net);
        theta[run] = malloc(sizeof(float) * n);
        memcpy(theta[run], kfac_net_params(net), sizeof(float) * n);
        if (run) {
            ck_assert_msg(memcmp(theta[0], theta[1], sizeof(float) * n) != 0,
                          "the schedule did not change a single weight");
            free(theta[0]);
            free(theta[1]);
        }
        kfac_trainer_free(t);
    }
    free_data();
}
END_TEST

/* The learning-rate schedules (docs/algorithm.md §11.1), step by step:
 * 10 steps an epoch. */
START_TEST(test_lr_schedules)
{
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.epochs = 4;
    for (long t = 0; t < 40; t++) /* constant, no warm-up: exactly 1 */
        ck_assert(kfac_lr_factor(&p, t, 10) == 1.0);
    p.warmup_epochs = 2.0f; /* 20 steps from 1/20 of lr up */
    ck_assert_double_eq_tol(kfac_lr_factor(&p, 0, 10), 1.0 / 20, 1e-15);
    ck_assert_double_eq_tol(kfac_lr_factor(&p, 9, 10), 10.0 / 20, 1e-15);
    ck_assert(kfac_lr_factor(&p, 19, 10) == 1.0 && kfac_lr_factor(&p, 20, 10) == 1.0);
    p.warmup_epochs = 0.0f;
    p.lr_schedule = KFAC_LR_STEP;
    p.lr_step_epochs = 2;
    p.lr_step_factor = 0.1f;
    ck_assert(kfac_lr_factor(&p, 19, 10) == 1.0);
    ck_assert_double_eq_tol(kfac_lr_factor(&p, 20, 10), 0.1, 1e-7);
    ck_assert_double_eq_tol(kfac_lr_factor(&p, 39, 10), 0.1, 1e-7);
    p.epochs = 6;
    ck_assert_double_eq_tol(kfac_lr_factor(&p, 40, 10), 0.01, 1e-8);
    p.epochs = 4;
    p.lr_schedule = KFAC_LR_COSINE;
    ck_assert(kfac_lr_factor(&p, 0, 10) == 1.0);
    ck_assert_double_eq_tol(kfac_lr_factor(&p, 20, 10), 0.5, 1e-15);
    double last = kfac_lr_factor(&p, 39, 10);
    ck_assert_msg(last > 0.0 && last < 0.01, "the last step's factor %g", last);
    p.warmup_epochs = 1.0f; /* the half cosine over the 30 steps after it */
    ck_assert_double_eq_tol(kfac_lr_factor(&p, 4, 10), 0.5, 1e-15);
    ck_assert(kfac_lr_factor(&p, 10, 10) == 1.0);
    ck_assert_double_eq_tol(kfac_lr_factor(&p, 25, 10), 0.5, 1e-15);
    /* by name, as a net file or a flag sets it */
    ck_assert_int_eq(kfac_train_params_set(&p, "lr_schedule", "step"), KFAC_OK);
    ck_assert_int_eq(p.lr_schedule, KFAC_LR_STEP);
    ck_assert_int_eq(kfac_train_params_set(&p, "lr_schedule", "exp"), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "unknown lr schedule 'exp' (constant, step, cosine)"));
}
END_TEST

/* A schedule changes the run: cosine with a warm-up against constant on
 * nets/small.net, momentum, the same seed */
START_TEST(test_lr_schedule_changes_the_run)
{
    load_data();
    kfac_dataset tr = slice(&train_all, 1000);
    kfac_net_spec s;
    kfac_train_params p;
    small_spec(&s, &p);
    p.batch = 100;
    p.epochs = 2;
    double loss[2];
    for (int run = 0; run < 2; run++) {
        p.lr_schedule = run ? KFAC_LR_COSINE : KFAC_LR_CONSTANT;
        p.warmup_epochs = run ? 1.0f : 0.0f;
        kfac_trainer *t;
        ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &t), KFAC_OK);
        kfac_epoch_stats es;
        for (int e = 0; e < 2; e++)
            ck_assert_int_eq(kfac_trainer_epoch(t, NULL, NULL, &es), KFAC_OK);
        loss[run] = es.train_loss;
        kfac_trainer_free(t);
    }
    ck_assert_msg(loss[0] != loss[1], "the same loss %g with and without the schedule", loss[0]);
    free_data();
}
END_TEST

START_TEST(test_divergence_detected)
{
    load_data();
    kfac_dataset tr = slice(&train_all, 2000);
    kfac_net_spec s;
    kfac_train_params p;
    small_spec(&s, &p);
    s.layers[0].activation = KFAC_ACT_LINEAR;
    p.optimizer = KFAC_OPT_SGD;
    p.optim.lr = 900.0f;
    kfac_trainer *t;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &tr, &t), KFAC_OK);
    kfac_status st = KFAC_OK;
    for (int e = 0; e < 3 && st == KFAC_OK; e++)
        st = kfac_trainer_epoch(t, NULL, NULL, NULL);
    ck_assert_int_eq(st, KFAC_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "diverged"));
    kfac_trainer_free(t);
    free_data();
}
END_TEST


/* A last step of an epoch that overflows the parameters: the loss was
 * finite before it, so only a look at theta after the epoch catches it,
 * before a caller evaluates (NaN) and saves it. One step an epoch, inputs
 * of 1e36 (finite, loss finite) and lr 1000 make the step's gradient
 * 1e36 and the weights Inf. */
START_TEST(test_divergence_on_last_step)
{
    enum { N = 20, F = 8, C = 2 };
    kfac_dataset d = {0};
    d.n = N, d.features = F, d.rows = 1, d.cols = F, d.classes = C;
    d.x = calloc((size_t)N * F, sizeof(float));
    d.labels = calloc(N, 1);
    for (int i = 0; i < N; i++) {
        d.labels[i] = (uint8_t)(i % C);
        d.x[(size_t)i * F + (i % C)] = 1e36f;
    }
    kfac_net_spec s;
    linear_spec(&s, F, C);
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.optimizer = KFAC_OPT_SGD;
    p.optim.lr = 1000.0f;
    p.batch = N;
    kfac_trainer *t;
    ck_assert_msg(kfac_trainer_new(&s, &p, &d, &t) == KFAC_OK, "%s", kfac_last_error());
    kfac_epoch_stats es;
    kfac_status st = kfac_trainer_epoch(t, NULL, NULL, &es);
    ck_assert_msg(st == KFAC_ERR_NUMERIC, "status %s (%s): the epoch ended with parameters %g ...", kfac_strerror(st),
                  kfac_last_error(), kfac_net_params(kfac_trainer_net(t))[0]);
    ck_assert_msg(strstr(kfac_last_error(), "training diverged: parameter") &&
                      strstr(kfac_last_error(), "after epoch 1, step 1"),
                  "%s", kfac_last_error());
    ck_assert(isfinite(es.train_loss)); /* the one loss seen was finite */
    kfac_trainer_free(t);
    free(d.x);
    free(d.labels);
}
END_TEST

/* NaN in the data (possible through the API, not from IDX bytes) or in the
 * weights is caught at the first loss, for every optimizer, K-FAC too,
 * and no step is taken with it. */
START_TEST(test_nan_caught_at_first_loss)
{
    enum { N = 40, F = 6, C = 3 };
    kfac_dataset d = {0};
    d.n = N, d.features = F, d.rows = 1, d.cols = F, d.classes = C;
    d.x = malloc(sizeof(float) * N * F);
    d.labels = malloc(N);
    kfac_rng r;
    kfac_rng_seed(&r, 9);
    for (int i = 0; i < N * F; i++)
        d.x[i] = (float)kfac_rng_uniform(&r);
    for (int i = 0; i < N; i++)
        d.labels[i] = (uint8_t)(i % C);
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = F;
    s.n_layers = 2;
    s.layers[0] = (kfac_layer_spec){.units = 5, .activation = KFAC_ACT_TANH};
    s.layers[1] = (kfac_layer_spec){.units = C, .activation = KFAC_ACT_LINEAR};
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.optimizer = (kfac_optimizer_kind)_i;
    p.batch = 10;
    p.kfac.cov_every = 1;
    kfac_trainer *t;
    ck_assert_msg(kfac_trainer_new(&s, &p, &d, &t) == KFAC_OK, "%s", kfac_last_error());
    kfac_net *net = kfac_trainer_net(t);
    size_t P = kfac_net_n_params(net);
    /* a NaN weight */
    float *theta = kfac_net_params(net), keep = theta[3];
    theta[3] = NAN;
    ck_assert_int_eq(kfac_trainer_epoch(t, NULL, NULL, NULL), KFAC_ERR_NUMERIC);
    ck_assert_msg(strstr(kfac_last_error(), "training diverged: loss is") &&
                      strstr(kfac_last_error(), "step 1"), "%s", kfac_last_error());
    for (size_t i = 0; i < P; i++)
        ck_assert_msg(i == 3 || isfinite(theta[i]), "%s: parameter %zu became %g", kfac_optimizer_name(p.optimizer),
                      i, theta[i]);
    theta[3] = keep;
    /* a NaN pixel: the trainer takes the data as it is */
    d.x[2 * F + 1] = NAN;
    kfac_status st = KFAC_OK;
    for (int e = 0; e < 2 && st == KFAC_OK; e++)
        st = kfac_trainer_epoch(t, NULL, NULL, NULL);
    ck_assert_int_eq(st, KFAC_ERR_NUMERIC);
    ck_assert_msg(strstr(kfac_last_error(), "training diverged"), "%s", kfac_last_error());
    for (size_t i = 0; i < P; i++)
        ck_assert_msg(isfinite(theta[i]), "%s: parameter %zu became %g", kfac_optimizer_name(p.optimizer), i,
                      theta[i]);
    kfac_trainer_free(t);
    free(d.x);
    free(d.labels);
}
END_TEST

#if defined(__x86_64__)
enum { CSR_FLUSH = 0x8040, CSR_FLAGS = 0x3f };

typedef struct fp_probe {
    int steps;
    int unflushed_threads; /* summed over steps */
    int denormal_results;  /* steps where tiny arithmetic gave a non-zero */
} fp_probe;

/* In the middle of the epoch: FTZ and DAZ on the calling thread and every
 * thread of its pool (a region of the trainer's size runs on the pool's
 * threads), and they act. */
static int probe_fp(void *user, long step, long steps)
{
    (void)step, (void)steps;
    fp_probe *p = user;
    int bad = 0;
#pragma omp parallel num_threads(kfac_get_threads()) reduction(+ : bad)
    bad += (_mm_getcsr() & CSR_FLUSH) != CSR_FLUSH;
    volatile float tiny = 1e-30f, denormal = 1e-40f, scale = 2.0f;
    float ftz = tiny * 1e-10f, daz = denormal * scale;
    p->steps++;
    p->unflushed_threads += bad;
    p->denormal_results += ftz != 0.0f || daz != 0.0f;
    return 0;
}

/* Adam on a problem whose state would hold denormals: a feature of 1e-18
 * makes its weights' gradients about 1e-19 (every label 0, so the mean of
 * softmax - onehot stays near -0.5 and +0.5), and then (1 - beta2) g^2 lies
 * between 1e-43 and 1e-39, below FLT_MIN. Flushed, v is 0 there. The
 * caller's MXCSR (the loop's value: default, already flushing, rounding
 * toward zero with a raised flag) keeps its modes and flags. */
START_TEST(test_epoch_flushes_denormals)
{
    static const unsigned caller_csr[] = {0x1f80, 0x1f80 | CSR_FLUSH, 0x7f80 | 0x01};
    enum { N = 64, F = 4, C = 2, B = 8 };
    kfac_set_threads(2);
    kfac_dataset d = {0};
    d.n = N, d.features = F, d.rows = 1, d.cols = F, d.classes = C;
    d.x = malloc(sizeof(float) * N * F);
    d.labels = calloc(N, 1);
    kfac_rng r;
    kfac_rng_seed(&r, 5);
    for (int i = 0; i < N; i++) {
        d.x[i * F] = 1e-18f;
        for (int j = 1; j < F; j++)
            d.x[i * F + j] = (float)kfac_rng_uniform(&r);
    }
    kfac_net_spec s;
    linear_spec(&s, F, C);
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.optimizer = KFAC_OPT_ADAM;
    p.batch = B;
    kfac_trainer *t;
    ck_assert_msg(kfac_trainer_new(&s, &p, &d, &t) == KFAC_OK, "%s", kfac_last_error());

    unsigned before = caller_csr[_i];
    _mm_setcsr(before);
    fp_probe probe = {0};
    kfac_status st = kfac_trainer_epoch(t, probe_fp, &probe, NULL);
    unsigned after = _mm_getcsr();
    _mm_setcsr(0x1f80);
    ck_assert_msg(st == KFAC_OK, "%s", kfac_last_error());
    ck_assert_msg((after & ~CSR_FLAGS) == (before & ~CSR_FLAGS), "MXCSR modes %#x before the epoch, %#x after",
                  before & ~CSR_FLAGS, after & ~CSR_FLAGS);
    ck_assert_msg((after & before & CSR_FLAGS) == (before & CSR_FLAGS), "MXCSR flags %#x before, %#x after", before,
                  after);
    ck_assert_int_eq(probe.steps, N / B);
    ck_assert_msg(probe.unflushed_threads == 0, "%d thread-steps without FTZ and DAZ", probe.unflushed_threads);
    ck_assert_msg(probe.denormal_results == 0, "%d steps computed denormals", probe.denormal_results);

    /* Adam's m and v, read back through the checkpoint's visitors */
    kfac_ckio w = {.mode = KFAC_CKIO_WRITE};
    kfac_trainer_io(t, &w);
    ck_assert_int_eq(w.status, KFAC_OK);
    size_t P = kfac_net_n_params(kfac_trainer_net(t));
    float theta[C * (F + 1)];
    ck_assert_uint_eq(P, C * (F + 1));
    kfac_optimizer *adam;
    ck_assert_int_eq(kfac_optimizer_new(KFAC_OPT_ADAM, NULL, P, &adam), KFAC_OK);
    kfac_ckio rd = {.mode = KFAC_CKIO_READ, .buf = w.buf, .len = w.len};
    kfac_ckio_floats(&rd, theta, P, "network parameters");
    kfac_optimizer_io(adam, &rd);
    ck_assert_msg(rd.status == KFAC_OK, "%s", kfac_last_error());
    const float *m = kfac_optimizer_state_vector(adam, 0), *v = kfac_optimizer_state_vector(adam, 1);
    for (size_t i = 0; i < P; i++) {
        ck_assert_msg(fpclassify(theta[i]) != FP_SUBNORMAL && fpclassify(m[i]) != FP_SUBNORMAL &&
                          fpclassify(v[i]) != FP_SUBNORMAL,
                      "parameter %zu: theta %g, m %g, v %g (a denormal)", i, theta[i], m[i], v[i]);
        if (i % (F + 1) == 0) { /* W's column of the tiny feature */
            /* the gradient was there and tiny, so unflushed v would be too */
            ck_assert_msg(fabsf(m[i]) > 1e-25f && fabsf(m[i]) < 1e-15f, "m[%zu] = %g", i, m[i]);
            ck_assert_msg(v[i] == 0.0f, "v[%zu] = %g, not flushed", i, v[i]);
        }
    }
    kfac_optimizer_free(adam);
    free(w.buf);
    kfac_trainer_free(t);
    free(d.x);
    free(d.labels);
}
END_TEST
#endif


/* val_fraction holds out the LAST rows, before any shuffling: a trainer
 * on all N rows with val_fraction trains exactly as one on the first rows
 * alone (the same weights, bit for bit), and its validation figures are
 * kfac_evaluate's on the last rows. The count is rounded to the nearest
 * (0.7 of 10 is 7, though 0.7f * 10 is 6.99999988). early_stop stops
 * when the validation loss has not improved for that many epochs: with
 * the held-out labels the opposite of the training ones, it must. */
START_TEST(test_validation_split)
{
    enum { N = 40, F = 6, C = 3 };
    kfac_dataset d = {0};
    d.n = N, d.features = F, d.rows = 1, d.cols = F, d.classes = C;
    d.x = malloc(sizeof(float) * N * F);
    d.labels = malloc(N);
    kfac_rng r;
    kfac_rng_seed(&r, 5);
    for (int i = 0; i < N; i++) {
        d.labels[i] = (uint8_t)(i % C);
        for (int j = 0; j < F; j++)
            d.x[i * F + j] = (float)kfac_rng_uniform(&r) + 2.0f * (j == i % C);
    }
    kfac_net_spec s;
    linear_spec(&s, F, C);
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.optimizer = KFAC_OPT_SGD;
    p.optim.lr = 0.5f;
    p.batch = 10;
    p.val_fraction = 0.25f; /* 10 of 40 */
    kfac_trainer *a, *b;
    ck_assert_msg(kfac_trainer_new(&s, &p, &d, &a) == KFAC_OK, "%s", kfac_last_error());
    kfac_dataset first = d, last = d;
    first.n = 30;
    last.n = 10, last.x += 30 * F, last.labels += 30;
    kfac_train_params q = p;
    q.val_fraction = 0.0f;
    ck_assert_msg(kfac_trainer_new(&s, &q, &first, &b) == KFAC_OK, "%s", kfac_last_error());
    kfac_epoch_stats ea, eb;
    for (int e = 0; e < 3; e++) {
        ck_assert_int_eq(kfac_trainer_epoch(a, NULL, NULL, &ea), KFAC_OK);
        ck_assert_int_eq(kfac_trainer_epoch(b, NULL, NULL, &eb), KFAC_OK);
        ck_assert_int_eq(ea.val_n, 10);
        ck_assert_int_eq(eb.val_n, 0);
        ck_assert(eb.val_loss == 0.0 && eb.early_stop == 0);
        ck_assert(ea.train_loss == eb.train_loss);
        size_t P = kfac_net_n_params(kfac_trainer_net(a));
        ck_assert(memcmp(kfac_net_params(kfac_trainer_net(a)), kfac_net_params(kfac_trainer_net(b)),
                         P * sizeof(float)) == 0);
        double vl, va;
        ck_assert_int_eq(kfac_evaluate(kfac_trainer_net(b), &last, &vl, &va), KFAC_OK);
        ck_assert(ea.val_loss == vl && ea.val_acc == va);
        ck_assert(ea.early_stop == 0); /* early_stop 0: never */
    }
    kfac_trainer_free(a);
    kfac_trainer_free(b);

    /* rounding to the nearest example */
    p.val_fraction = 0.7f;
    p.batch = 3;
    kfac_dataset ten = d;
    ten.n = 10;
    ck_assert_msg(kfac_trainer_new(&s, &p, &ten, &a) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_trainer_epoch(a, NULL, NULL, &ea), KFAC_OK);
    ck_assert_int_eq(ea.val_n, 7);
    kfac_trainer_free(a);
    /* nothing to validate, or nothing left to train, or the batch too large */
    p.val_fraction = 0.01f;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &ten, &a), KFAC_ERR_INVALID_ARG);
    ck_assert_msg(strstr(kfac_last_error(), "no example to validate"), "%s", kfac_last_error());
    p.val_fraction = 0.97f;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &ten, &a), KFAC_ERR_INVALID_ARG);
    ck_assert_msg(strstr(kfac_last_error(), "no example to train"), "%s", kfac_last_error());
    p.val_fraction = 0.5f;
    p.batch = 6;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &ten, &a), KFAC_ERR_INVALID_ARG);
    ck_assert_msg(strstr(kfac_last_error(), "batch 6 larger than the training set (5 examples)"), "%s",
                  kfac_last_error());
    /* early_stop needs a validation set */
    p.val_fraction = 0.0f;
    p.batch = 5;
    p.early_stop = 2;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &ten, &a), KFAC_ERR_INVALID_ARG);
    ck_assert_msg(strstr(kfac_last_error(), "early_stop = 2 needs a validation set"), "%s", kfac_last_error());

    /* held-out labels the opposite of the training ones: as training fits,
     * the validation loss rises, and early_stop 2 stops two epochs after
     * its lowest */
    for (int i = 30; i < N; i++)
        d.labels[i] = (uint8_t)((i + 1) % C);
    p.val_fraction = 0.25f;
    p.batch = 10;
    p.early_stop = 2;
    ck_assert_msg(kfac_trainer_new(&s, &p, &d, &a) == KFAC_OK, "%s", kfac_last_error());
    int stopped = 0;
    for (int e = 1; e <= 50 && !stopped; e++) {
        ck_assert_int_eq(kfac_trainer_epoch(a, NULL, NULL, &ea), KFAC_OK);
        stopped = ea.early_stop ? e : 0;
    }
    ck_assert_msg(stopped > 0, "no early stop in 50 epochs");
    ck_assert_int_eq(ea.best_epoch, stopped - 2);
    kfac_trainer_free(a);
    free(d.x);
    free(d.labels);
}
END_TEST

Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    /* whole training runs on the real data: left out under valgrind
     * (make check-valgrind excludes the tag), run everywhere else */
    TCase *tc = tcase_create("learning");
    tcase_set_tags(tc, "training");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_every_optimizer_learns, 0, KFAC_OPT_COUNT);
    tcase_add_test(tc, test_reproducible);
    tcase_add_test(tc, test_tiny_net_pools_through_api);
    tcase_add_test(tc, test_autoencoder_learns);
    tcase_add_test(tc, test_kfac_beats_sgd_on_autoencoder);
    suite_add_tcase(s, tc);

    tc = tcase_create("faults");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_trainer_refuses_bad_setups);
    tcase_add_test(tc, test_divergence_detected);
    tcase_add_test(tc, test_damping_half_life);
    tcase_add_test(tc, test_lr_schedules);
    tcase_add_test(tc, test_lr_schedule_changes_the_run);
    tcase_add_test(tc, test_divergence_on_last_step);
    tcase_add_test(tc, test_validation_split);
    tcase_add_loop_test(tc, test_nan_caught_at_first_loss, 0, KFAC_OPT_COUNT);
    suite_add_tcase(s, tc);

#if defined(__x86_64__)
    /* valgrind does not emulate MXCSR's modes (make check-valgrind
     * excludes the tag) */
    tc = tcase_create("floating point");
    tcase_set_tags(tc, "fpenv");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_epoch_flushes_denormals, 0, 3);
    suite_add_tcase(s, tc);
#endif
    return s;
}
