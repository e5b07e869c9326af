/* test_api.c - the public API as an embedder meets it: misuse (NULL, wrong
 * sizes, calls out of order) returns the documented status; predictions
 * are the model's means; the public preconditioner driven by hand gives
 * bit for bit the built-in K-FAC optimizer's steps (one implementation);
 * its own checkpoints resume exactly; and the embedding examples build
 * against an installed copy with pkg-config alone and pass. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fisher.h"
#include "kfac.h"
#include "net.h"
#include "optim.h"
#include "tests.h"

static void spec_5_6_3(kfac_net_spec *s, kfac_loss loss)
{
    kfac_net_spec_init(s);
    s->inputs = 5;
    s->n_layers = 2;
    s->loss = loss;
    s->layers[0] = (kfac_layer_spec){.units = 6, .activation = KFAC_ACT_TANH};
    s->layers[1] = (kfac_layer_spec){.units = 3, .activation = KFAC_ACT_LINEAR};
}

static void fill(float *v, size_t n, kfac_rng *r)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)kfac_rng_uniform(r) * 2.0f - 1.0f;
}

START_TEST(test_misuse)
{
    kfac_net_spec s;
    spec_5_6_3(&s, KFAC_LOSS_SOFTMAX_XENT);
    kfac_net *net;
    ck_assert_int_eq(kfac_net_new(&s, 4, &net), KFAC_OK);
    float x[20] = {0}, out[12], y[12] = {0};
    kfac_rng r;
    kfac_rng_seed(&r, 1);

    /* NULL arguments */
    kfac_net *none; /* a failed kfac_net_new sets *out to NULL */
    ck_assert_int_eq(kfac_net_new(NULL, 4, &none), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(none);
    ck_assert_int_eq(kfac_net_new(&s, 4, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_predict(NULL, x, 1, out), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_predict(net, NULL, 1, out), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_predict(net, x, 1, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sample_targets(KFAC_LOSS_SQUARED, NULL, y, 1, 3, &r), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sample_targets(KFAC_LOSS_SQUARED, out, y, 1, 3, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_trainer_save(NULL, "x"), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_trainer_load(NULL, "x"), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_load_checkpoint(net, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_save(NULL, "x"), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_load(NULL, "x"), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_get_stats(NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_set_fisher(NULL, NULL, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_step(NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_loss_from_name("squared", NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_trainer_new(&s, NULL, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_evaluate(NULL, NULL, NULL, NULL), KFAC_ERR_INVALID_ARG);
    kfac_dataset empty = {0};
    ck_assert_int_eq(kfac_evaluate(net, &empty, NULL, NULL), KFAC_ERR_INVALID_ARG);
    kfac_optim_params_init(NULL); /* no-ops, no crash */
    kfac_kfac_params_init(NULL);
    kfac_train_params_init(NULL);
    kfac_net_spec_init(NULL);
    kfac_rng_seed(NULL, 1);
    kfac_precond_free(NULL);
    kfac_trainer_free(NULL);
    ck_assert_int_eq(kfac_fisher_from_name("sampled", NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_inversion_from_name("eigen", NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_step_rule_from_name("kl_clip", NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_activation_from_name("relu", NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_init_from_name("he", NULL), KFAC_ERR_INVALID_ARG);
    /* accessors answer NULL with a neutral value */
    ck_assert_ptr_null(kfac_trainer_net(NULL));
    ck_assert_int_eq(kfac_trainer_epochs_done(NULL), -1);
    ck_assert_uint_eq(kfac_precond_n_params(NULL), 0);
    ck_assert_int_eq(kfac_precond_steps(NULL), 0);
    ck_assert_int_eq(kfac_precond_stats_due(NULL), 0);
    ck_assert_int_eq(kfac_precond_stat_rows(NULL, 4), -1);
    ck_assert_ptr_null(kfac_precond_direction(NULL, 0));
    ck_assert_ptr_null(kfac_net_get_spec(NULL));
    ck_assert_uint_eq(kfac_net_n_params(NULL), 0);
    ck_assert_ptr_null(kfac_net_params(NULL));
    ck_assert_ptr_null(kfac_net_output(NULL));
    ck_assert_ptr_null(kfac_net_layer_input(NULL, 0));
    ck_assert_ptr_null(kfac_net_layer_weights(NULL, 0, NULL, NULL));

    /* wrong sizes */
    ck_assert_int_eq(kfac_net_predict(net, x, 0, out), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_predict(net, x, 5, out), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sample_targets(KFAC_LOSS_COUNT, out, y, 1, 3, &r), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sample_targets(KFAC_LOSS_SQUARED, out, y, 0, 3, &r), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sample_targets(KFAC_LOSS_SQUARED, out, y, 1, 0, &r), KFAC_ERR_INVALID_ARG);
    int din[2] = {6, 7}, dout[2] = {6, 3};
    kfac_precond *pc = NULL;
    ck_assert_int_eq(kfac_precond_new(0, din, dout, 4, NULL, NULL, &pc), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_new(KFAC_MAX_LAYERS + 1, din, dout, 4, NULL, NULL, &pc), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_new(2, NULL, dout, 4, NULL, NULL, &pc), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 0, NULL, NULL, &pc), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 4, NULL, NULL, NULL), KFAC_ERR_INVALID_ARG);
    int bad_din[2] = {6, 0};
    ck_assert_int_eq(kfac_precond_new(2, bad_din, dout, 4, NULL, NULL, &pc), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(pc);
    kfac_optim_params op;
    kfac_kfac_params kp;
    kfac_optim_params_init(&op);
    kfac_kfac_params_init(&kp);
    op.lr = -1.0f;
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 4, &op, NULL, &pc), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "train.lr = -1 is outside (0, 1000]"));
    kp.inv_every = 0;
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 4, NULL, &kp, &pc), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "inv_every"));

    /* steps with missing pieces change nothing */
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 4, NULL, NULL, &pc), KFAC_OK);
    ck_assert_uint_eq(kfac_precond_n_params(pc), 6 * 6 + 7 * 3);
    ck_assert_uint_eq(kfac_precond_layer_offset(pc, 1), 36);
    ck_assert_int_eq(kfac_precond_stat_rows(pc, 4), 4);
    ck_assert_int_eq(kfac_precond_stat_rows(pc, 5), -1);
    float w0[36] = {0}, w1[21] = {0}, g0[36] = {0}, g1[21] = {0}, ab0[24] = {0}, ab1[28] = {0}, gs0[24], gs1[12];
    float *w[2] = {w0, w1};
    const float *grads[2] = {g0, g1}, *abar[2] = {ab0, ab1}, *gs[2] = {gs0, gs1}, *half[2] = {g0, NULL};
    kfac_precond_batch b = {4, w, grads, abar, gs, 0.0, NULL};
    ck_assert_int_eq(kfac_precond_stats_due(pc), 1);
    b.rows = 5;
    ck_assert_int_eq(kfac_precond_step(pc, &b), KFAC_ERR_INVALID_ARG);
    b.rows = 0;
    ck_assert_int_eq(kfac_precond_step(pc, &b), KFAC_ERR_INVALID_ARG);
    b.rows = 4;
    b.abar = NULL; /* statistics are due at the first step */
    ck_assert_int_eq(kfac_precond_step(pc, &b), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "statistics are due"));
    b.abar = abar;
    b.grads = half;
    ck_assert_int_eq(kfac_precond_step(pc, &b), KFAC_ERR_INVALID_ARG);
    b.grads = NULL;
    ck_assert_int_eq(kfac_precond_step(pc, &b), KFAC_ERR_INVALID_ARG);
    b.grads = grads;
    ck_assert_int_eq(kfac_precond_steps(pc), 0);
    ck_assert_ptr_null(kfac_precond_direction(pc, 0));
    fill(ab0, 24, &r), fill(ab1, 28, &r), fill(gs0, 24, &r), fill(gs1, 12, &r), fill(g0, 36, &r), fill(g1, 21, &r);
    ck_assert_msg(kfac_precond_step(pc, &b) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_precond_steps(pc), 1);
    ck_assert_ptr_nonnull(kfac_precond_direction(pc, 1));
    ck_assert_ptr_null(kfac_precond_direction(pc, 2));
    /* not due now (cov_every 10): abar and g may be NULL */
    ck_assert_int_eq(kfac_precond_stats_due(pc), 0);
    b.abar = NULL;
    b.g_sampled = NULL;
    ck_assert_int_eq(kfac_precond_step(pc, &b), KFAC_OK);
    kfac_precond_free(pc);

    /* the quadratic rule without its callbacks: out of order */
    kfac_kfac_params_init(&kp);
    kp.rule = KFAC_RULE_QUADRATIC;
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 4, NULL, &kp, &pc), KFAC_OK);
    b.abar = abar;
    b.g_sampled = gs;
    ck_assert_int_eq(kfac_precond_step(pc, &b), KFAC_ERR_STATE);
    ck_assert_int_eq(kfac_precond_steps(pc), 0);
    kfac_precond_free(pc);

    kfac_net_free(net);
}
END_TEST

/* Predictions are the model's means: softmax rows summing to 1, sigmoid in
 * (0, 1), z itself for squared error. */
/* Every enum is named one way (names.c): each name looks itself up,
 * past-the-end kinds have none, and an unknown name lists the valid ones. */
#define ROUND_TRIP(type, prefix, count, first, what)                                                              \
    do {                                                                                                          \
        for (int k = 0; k < (count); k++) {                                                                       \
            const char *nm = prefix##_name((type)k);                                                              \
            ck_assert_msg(nm && *nm, #prefix " %d has no name", k);                                               \
            type back = (type)((k + 1) % (count));                                                                \
            ck_assert_int_eq(prefix##_from_name(nm, &back), KFAC_OK);                                             \
            ck_assert_int_eq(back, k);                                                                            \
        }                                                                                                         \
        ck_assert_ptr_null(prefix##_name((type)(count)));                                                         \
        type untouched = (type)0;                                                                                 \
        ck_assert_int_eq(prefix##_from_name("no-such-name", &untouched), KFAC_ERR_INVALID_ARG);                   \
        char want[128];                                                                                           \
        snprintf(want, sizeof want, "unknown %s 'no-such-name' (%s, ", what, first);                              \
        ck_assert_msg(strstr(kfac_last_error(), want), "%s", kfac_last_error());                                  \
        ck_assert_int_eq(prefix##_from_name(NULL, &untouched), KFAC_ERR_INVALID_ARG);                             \
    } while (0)

START_TEST(test_enum_names)
{
    ROUND_TRIP(kfac_activation, kfac_activation, KFAC_ACT_COUNT, "linear", "activation");
    ROUND_TRIP(kfac_loss, kfac_loss, KFAC_LOSS_COUNT, "softmax_xent", "loss");
    ROUND_TRIP(kfac_init, kfac_init, KFAC_INIT_COUNT, "glorot", "init");
    ROUND_TRIP(kfac_optimizer_kind, kfac_optimizer, KFAC_OPT_COUNT, "sgd", "optimizer");
    ROUND_TRIP(kfac_fisher_kind, kfac_fisher, KFAC_FISHER_COUNT, "sampled", "Fisher kind");
    ROUND_TRIP(kfac_inversion, kfac_inversion, KFAC_INV_COUNT, "cholesky", "inversion");
    ROUND_TRIP(kfac_step_rule, kfac_step_rule, KFAC_RULE_COUNT, "kl_clip", "step rule");
}
END_TEST

/* What a caller can hand the library, checked at the entry: a data set
 * whose shape disagrees with its feature count, a layer too wide for
 * K-FAC's factors (a problem of the network, counted from 1), a thread
 * count past what OpenBLAS runs (capped, and kfac_get_threads says so). */
START_TEST(test_entry_checks)
{
    float x[2 * 6] = {0};
    kfac_dataset d = {.x = x, .n = 2, .rows = 2, .cols = 2, .features = 6};
    kfac_dataset out;
    ck_assert_int_eq(kfac_dataset_pool(&d, 2, &out), KFAC_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "2x2 images but 6 features per example"));
    d.rows = 2, d.cols = 3;
    ck_assert_int_eq(kfac_dataset_pool(&d, 1, &out), KFAC_OK); /* consistent: pooled by 1 */
    kfac_dataset_free(&out);

    int din[2] = {5, 50001}, dout[2] = {3, 2};
    kfac_precond *pc = NULL;
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 4, NULL, NULL, &pc), KFAC_ERR_SHAPE);
    ck_assert_ptr_null(pc);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "layer 2 has 2 x 50001 weights"));

    kfac_set_threads(1000);
    int got = kfac_get_threads();
    ck_assert_msg(got >= 1 && got <= 1000, "%d threads", got);
    ck_assert_int_eq(got, openblas_get_num_threads()); /* our loops and OpenBLAS alike */
    kfac_set_threads(2);
    ck_assert_int_eq(kfac_get_threads(), 2);
}
END_TEST

/* A kfac_dataset is a public struct, so an embedder can hand the library
 * anything in it. A label past the network's classes (or a negative one
 * stored in the byte, 255) was a one-hot write past its row in the
 * trainer's gather; rows and cols that disagree with the features, or are
 * negative while their product agrees, were taken on trust. Each is
 * refused with a status and a message, before anything is allocated
 * (*out NULL), by every entry point that reads a dataset. */
START_TEST(test_hand_built_datasets)
{
    enum { N = 12 };
    kfac_set_threads(1);
    kfac_net_spec s;
    spec_5_6_3(&s, KFAC_LOSS_SOFTMAX_XENT); /* 5 inputs, 3 classes */
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.batch = 4;
    float x[N * 5];
    uint8_t labels[N];
    kfac_rng r;
    kfac_rng_seed(&r, 3);
    fill(x, N * 5, &r);
    for (int i = 0; i < N; i++)
        labels[i] = (uint8_t)(i % 3);
    kfac_dataset good = {.n = N, .features = 5, .rows = 1, .cols = 5, .classes = 3, .x = x, .labels = labels};
    kfac_trainer *t = (kfac_trainer *)&t;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &good, &t), KFAC_OK);
    kfac_trainer_free(t);

    static const struct {
        int label;            /* put at index 7; -1: leave the labels */
        int rows, cols, features;
        kfac_status want;
        const char *msg;
    } cases[] = {
        {3, 1, 5, 5, KFAC_ERR_INVALID_ARG, "label 3 at index 7 outside [0, 3)"},
        {200, 1, 5, 5, KFAC_ERR_INVALID_ARG, "label 200 at index 7 outside [0, 3)"},
        {(uint8_t)-1, 1, 5, 5, KFAC_ERR_INVALID_ARG, "label 255 at index 7 outside [0, 3)"},
        {-1, 2, 2, 5, KFAC_ERR_SHAPE, "2x2 images but 5 features per example"},
        {-1, -1, -5, 5, KFAC_ERR_SHAPE, "-1x-5 images but 5 features per example"},
        {-1, 0, 5, 5, KFAC_ERR_SHAPE, "0x5 images but 5 features per example"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        uint8_t bad_labels[N];
        memcpy(bad_labels, labels, N);
        if (cases[c].label >= 0)
            bad_labels[7] = (uint8_t)cases[c].label;
        kfac_dataset d = good;
        d.labels = bad_labels;
        d.rows = cases[c].rows, d.cols = cases[c].cols, d.features = cases[c].features;
        t = (kfac_trainer *)&t;
        ck_assert_int_eq(kfac_trainer_new(&s, &p, &d, &t), cases[c].want);
        ck_assert_ptr_null(t);
        ck_assert_msg(strstr(kfac_last_error(), cases[c].msg), "case %zu: %s", c, kfac_last_error());
        /* kfac_evaluate reads the same gather */
        kfac_net *net;
        ck_assert_int_eq(kfac_net_new(&s, 4, &net), KFAC_OK);
        double loss = -1.0, acc = -1.0;
        ck_assert_int_eq(kfac_evaluate(net, &d, &loss, &acc), cases[c].want);
        ck_assert_msg(strstr(kfac_last_error(), cases[c].msg), "case %zu: %s", c, kfac_last_error());
        ck_assert(loss == -1.0 && acc == -1.0);
        kfac_net_free(net);
        /* kfac_check makes a trainer of it */
        kfac_check_report rep;
        ck_assert_int_eq(kfac_check(&s, &p, &d, 0, 4, &rep), cases[c].want);
        ck_assert_msg(strstr(kfac_last_error(), cases[c].msg), "case %zu: %s", c, kfac_last_error());
    }
    /* a negative class count or example count */
    kfac_dataset odd = good;
    odd.classes = -3;
    t = (kfac_trainer *)&t;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &odd, &t), KFAC_ERR_SHAPE);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(kfac_last_error(), "the data has -3 classes but the network has 3 outputs"), "%s",
                  kfac_last_error());
    odd = good;
    odd.n = -5;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &odd, &t), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(t);

    /* pooling trusts neither: negative rows and cols whose product is the
     * features gave an uninitialised "pooled" set */
    kfac_dataset neg = good, out = {0};
    neg.rows = -1, neg.cols = -5;
    ck_assert_int_eq(kfac_dataset_pool(&neg, 1, &out), KFAC_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "kfac_dataset_pool: -1x-5 images but 5 features per example"));
    ck_assert_ptr_null(out.x);
    ck_assert_int_eq(kfac_dataset_pool(&good, 1, NULL), KFAC_ERR_INVALID_ARG);

    /* a label the caller spoils after the trainer checked them: refused
     * at the gather, never written */
    uint8_t later[N];
    memcpy(later, labels, N);
    kfac_dataset d = good;
    d.labels = later;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &d, &t), KFAC_OK);
    for (int i = 0; i < N; i++)
        later[i] = 250;
    kfac_epoch_stats st;
    ck_assert_int_eq(kfac_trainer_epoch(t, NULL, NULL, &st), KFAC_ERR_INVALID_ARG);
    ck_assert_msg(strstr(kfac_last_error(), "outside [0, 3)"), "%s", kfac_last_error());
    kfac_trainer_free(t);
}
END_TEST


/* The child's wait status; a child that has not ended in 120 s (the
 * calls it makes take milliseconds: a hang, not a slow machine) is
 * killed and the test fails naming `what`. */
static int wait_or_kill(pid_t pid, const char *what)
{
    int status = 0;
    for (int waited = 0; waited < 1200; waited++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        nanosleep(&(struct timespec){0, 100000000L}, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ck_abort_msg("%s did not return in 120 s", what);
    return status;
}
/* OpenBLAS maps a 128 MiB buffer for each thread as the count is set and
 * retries one it cannot get forever: under a 4 GB address-space limit
 * kfac_set_threads(32) spun at 100% CPU for good. In a child under a
 * limit of what it has mapped plus 2 GiB, the count is cut to what fits,
 * kfac_threads_note says why, and OpenBLAS still multiplies; under its
 * size plus 64 MiB a trainer refuses to start (KFAC_ERR_NOMEM), where
 * its first product waited forever for OpenBLAS's buffer. The parent
 * waits at most 120 s (the child takes milliseconds), so a hang fails the
 * test instead of stalling the suite. Left out under ASan and valgrind
 * ($KFAC_TEST_NO_MEMCAP), which map far more address space themselves. */
START_TEST(test_threads_under_memory_limit)
{
    const char *nocap = getenv("KFAC_TEST_NO_MEMCAP");
    if (nocap && *nocap)
        return;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        unsigned long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%lu", &pages) != 1)
            _exit(10);
        fclose(f);
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)2 << 30);
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(11);
        kfac_set_threads(32);
        int got = kfac_get_threads();
        if (got < 1 || got >= 32 || got != openblas_get_num_threads())
            _exit(12);
        if (!strstr(kfac_threads_note(), "the memory limits leave room for"))
            _exit(13);
        float a[64 * 64], c[64 * 64];
        for (int i = 0; i < 64 * 64; i++)
            a[i] = 1.0f;
        /* C <- A A^T: 64 everywhere */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 64, 64, 64, 1.0f, a, 64, a, 64, 0.0f, c, 64);
        _exit(c[0] == 64.0f && c[64 * 64 - 1] == 64.0f ? 0 : 14);
    }
    int status = wait_or_kill(pid, "kfac_set_threads(32) under a memory limit");
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status 0x%x", status);

    /* OpenBLAS's first product maps the caller's buffer, 129 MiB, and
     * waits for it forever: a trainer under a limit of what the process
     * has mapped plus 64 MiB trained into that hang. Now the trainer and
     * kfac_evaluate refuse to start. */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        kfac_net_spec s;
        spec_5_6_3(&s, KFAC_LOSS_SOFTMAX_XENT);
        float x[8 * 5] = {0};
        uint8_t lab[8] = {0, 1, 2, 0, 1, 2, 0, 1};
        kfac_dataset d = {.n = 8, .features = 5, .rows = 1, .cols = 5, .classes = 3, .x = x, .labels = lab};
        kfac_net *net;
        if (kfac_net_new(&s, 8, &net) != KFAC_OK)
            _exit(10);
        unsigned long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%lu", &pages) != 1)
            _exit(11);
        fclose(f);
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)64 << 20);
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(12);
        kfac_train_params p;
        kfac_train_params_init(&p);
        p.batch = 4;
        kfac_trainer *t;
        if (kfac_trainer_new(&s, &p, &d, &t) == KFAC_OK) {
            kfac_trainer_epoch(t, NULL, NULL, NULL); /* the hang it was */
            _exit(13);
        }
        if (!strstr(kfac_last_error(), "OpenBLAS needs"))
            _exit(14);
        double loss;
        _exit(kfac_evaluate(net, &d, &loss, NULL) == KFAC_ERR_NOMEM ? 0 : 15);
    }
    status = wait_or_kill(pid, "a trainer under a memory limit");
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status 0x%x", status);

    /* without a limit only OpenBLAS's own maximum cuts, and says so */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        kfac_set_threads(1000);
        int got = kfac_get_threads();
        char want[64];
        snprintf(want, sizeof want, "OpenBLAS runs at most %d thread", got);
        _exit(got < 1000 && strstr(kfac_threads_note(), want) ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

START_TEST(test_predict)
{
    static const kfac_loss losses[] = {KFAC_LOSS_SOFTMAX_XENT, KFAC_LOSS_SIGMOID_XENT, KFAC_LOSS_SQUARED};
    kfac_loss loss = losses[_i];
    kfac_net_spec s;
    spec_5_6_3(&s, loss);
    kfac_net *net;
    ck_assert_int_eq(kfac_net_new(&s, 4, &net), KFAC_OK);
    kfac_rng r;
    kfac_rng_seed(&r, 9);
    ck_assert_int_eq(kfac_net_init_weights(net, &r), KFAC_OK);
    float x[20], p[12], z[12];
    fill(x, 20, &r);
    ck_assert_int_eq(kfac_net_forward(net, x, 4), KFAC_OK);
    memcpy(z, kfac_net_output(net), sizeof z);
    ck_assert_int_eq(kfac_net_predict(net, x, 4, p), KFAC_OK);
    for (int i = 0; i < 4; i++) {
        double sum = 0.0, lse = 0.0;
        for (int j = 0; j < 3; j++)
            lse += exp(z[i * 3 + j]);
        for (int j = 0; j < 3; j++) {
            double want = loss == KFAC_LOSS_SOFTMAX_XENT   ? exp(z[i * 3 + j]) / lse
                          : loss == KFAC_LOSS_SIGMOID_XENT ? 1.0 / (1.0 + exp(-z[i * 3 + j]))
                                                           : z[i * 3 + j];
            ck_assert_msg(fabs(p[i * 3 + j] - want) < 1e-6, "%s: %g vs %g", kfac_loss_name(loss), p[i * 3 + j], want);
            sum += p[i * 3 + j];
        }
        if (loss == KFAC_LOSS_SOFTMAX_XENT)
            ck_assert(fabs(sum - 1.0) < 1e-6);
    }
    /* sampled targets follow the loss: one-hot, 0/1, or continuous */
    float y[12];
    ck_assert_int_eq(kfac_sample_targets(loss, z, y, 4, 3, &r), KFAC_OK);
    for (int i = 0; i < 4 && loss != KFAC_LOSS_SQUARED; i++) {
        float ones = 0.0f;
        for (int j = 0; j < 3; j++) {
            ck_assert(y[i * 3 + j] == 0.0f || y[i * 3 + j] == 1.0f);
            ones += y[i * 3 + j];
        }
        if (loss == KFAC_LOSS_SOFTMAX_XENT)
            ck_assert(ones == 1.0f);
    }
    kfac_net_free(net);
}
END_TEST

/* For the quadratic rule through the public callbacks: the network's exact
 * F v and its batch loss. */
typedef struct fisher_ctx {
    kfac_fisher *f;
    kfac_net *net;
    const float *y;
    const float *gout; /* the labels' g at the last layer, for the slopes */
    kfac_precond *pc;  /* for its cheaper products along the direction */
    float *jv;         /* rows x d_out per layer */
} fisher_ctx;

static kfac_status ctx_fisher_vec(void *user, const float *v, float *fv)
{
    fisher_ctx *c = user;
    return kfac_fisher_vec(c->f, c->net, v, fv);
}

static kfac_status ctx_fisher_forms(void *user, const float *v1, const float *v2, double s[3])
{
    fisher_ctx *c = user;
    return kfac_fisher_forms(c->f, c->net, c->net->batch, v1, v2, s);
}

static kfac_status ctx_fisher_model(void *user, const float *v1, const float *v2, double s[5])
{
    fisher_ctx *c = user;
    const float *pre[2] = {NULL, NULL};
    int B = c->net->batch;
    float *jv = c->jv;
    for (int l = 0; l < 2 && c->pc; l++) {
        int dout;
        kfac_net_layer_weights(c->net, l, &dout, NULL);
        if (kfac_precond_direction_rows(c->pc, l, B, jv) == 1)
            pre[l] = jv;
        jv += (size_t)B * dout;
    }
    return kfac_fisher_model(c->f, c->net, B, c->gout, v1, pre, v2, s);
}

static kfac_status ctx_loss(void *user, double *loss)
{
    fisher_ctx *c = user;
    kfac_status st = kfac_net_forward_in_place(c->net, c->net->batch);
    return st != KFAC_OK ? st : kfac_net_loss(c->net, c->y, loss, NULL);
}

/* What a caller of the public preconditioner does before its step, on a
 * net with H hidden units and 3 outputs: forward, loss, backward (the
 * gradient into grad unless NULL), the labels' g kept in gt before the
 * sampled-target pass, when due, overwrites the net's; returns the loss. */
static double hand_passes(kfac_net *net, const kfac_precond *pc, kfac_loss loss_kind, const float *x, const float *y,
                          float *ys, int B, int H, float *grad, float *gt, kfac_rng *r)
{
    double loss;
    ck_assert_int_eq(kfac_net_forward(net, x, B), KFAC_OK);
    ck_assert_int_eq(kfac_net_loss(net, y, &loss, NULL), KFAC_OK);
    ck_assert_int_eq(kfac_net_backward(net, y, grad), KFAC_OK);
    memcpy(gt, kfac_net_layer_pregrad(net, 0), sizeof(float) * B * H);
    memcpy(gt + B * H, kfac_net_layer_pregrad(net, 1), sizeof(float) * B * 3);
    if (kfac_precond_stats_due(pc)) {
        ck_assert_int_eq(kfac_sample_targets(loss_kind, kfac_net_output(net), ys, B, 3, r), KFAC_OK);
        ck_assert_int_eq(kfac_net_backward(net, ys, NULL), KFAC_OK);
    }
    return loss;
}

/* The public preconditioner, fed by hand from a kfac_net's recorded abar,
 * gradients and sampled-target g, takes exactly the built-in optimizer's
 * steps: both are one engine. Loops 0 and 1: rows (64) above the layer
 * sizes keep the built-in in the weight form, as gradients given to the
 * public path are. Loop 2: a wider net at 16 rows, low-rank inverses, and
 * the public path given abar and the labels' g instead of gradients, so
 * both may take the batch form (and the first layer does). Loop 3: the
 * same with the quadratic rule, whose model callback's slopes stand in
 * for the gradient the batch form does not form; a third net, stepped by
 * a preconditioner with the forms alone (which forms it), stays within
 * rounding of both. */
START_TEST(test_precond_is_the_builtin)
{
    enum { STEPS = 12, MAXB = 64, MAXIN = 40 };
    const int by_rows = _i >= 2, B = by_rows ? 16 : 64, IN = by_rows ? 40 : 5, H = by_rows ? 48 : 6;
    const int quad = _i == 1 || _i == 3;
    kfac_set_threads(1);
    kfac_net_spec s;
    spec_5_6_3(&s, KFAC_LOSS_SOFTMAX_XENT);
    s.inputs = IN;
    s.layers[0].units = H;
    kfac_train_params tp;
    kfac_train_params_init(&tp);
    tp.optimizer = KFAC_OPT_KFAC;
    tp.optim.lr = 0.1f;
    tp.optim.weight_decay = _i == 1 ? 1e-3f : 0.0f;
    tp.kfac.cov_every = 2;
    tp.kfac.inv_every = 5;
    if (quad) {
        tp.kfac.rule = KFAC_RULE_QUADRATIC;
        tp.kfac.inversion = KFAC_INV_EIGEN;
        tp.kfac.damping = 1.0f;
        tp.kfac.lm_every = 2;
    }
    if (by_rows) {
        tp.kfac.inversion = KFAC_INV_LOWRANK;
        tp.kfac.rank_max = 8; /* 2 (8 + 8) <= 41, 48, 49: low-rank */
    }
    kfac_net *na, *nb, *nc;
    ck_assert_int_eq(kfac_net_new(&s, B, &na), KFAC_OK);
    ck_assert_int_eq(kfac_net_new(&s, B, &nb), KFAC_OK);
    ck_assert_int_eq(kfac_net_new(&s, B, &nc), KFAC_OK);
    kfac_rng r, ra, rb, rc;
    kfac_rng_seed(&r, 3);
    ck_assert_int_eq(kfac_net_init_weights(na, &r), KFAC_OK);
    memcpy(kfac_net_params(nb), kfac_net_params(na), kfac_net_n_params(na) * sizeof(float));
    memcpy(kfac_net_params(nc), kfac_net_params(na), kfac_net_n_params(na) * sizeof(float));
    kfac_rng_seed(&ra, 11);
    kfac_rng_seed(&rb, 11);
    kfac_rng_seed(&rc, 11);

    kfac_optimizer *opt;
    ck_assert_msg(kfac_optimizer_new_for_net(&tp, na, NULL, &opt) == KFAC_OK, "%s", kfac_last_error());
    int din[2] = {IN + 1, H + 1}, dout[2] = {H, 3};
    kfac_precond *pc;
    ck_assert_int_eq(kfac_precond_new(2, din, dout, B, &tp.optim, &tp.kfac, &pc), KFAC_OK);
    float *jv = malloc(sizeof(float) * B * (H + 3)), *want = malloc(sizeof(float) * B * H);
    fisher_ctx fc = {NULL, nb, NULL, NULL, pc, jv}, fc3 = {NULL, nc, NULL, NULL, NULL, NULL};
    kfac_precond *pc3 = NULL; /* loop 3: the forms alone */
    if (quad) {
        ck_assert_int_eq(kfac_fisher_new(nb, &fc.f), KFAC_OK);
        ck_assert_int_eq(kfac_precond_set_fisher(pc, ctx_fisher_vec, ctx_loss, &fc), KFAC_OK);
        /* the built-in's forward-mode forms and slopes, as it takes them */
        ck_assert_int_eq(kfac_precond_set_fisher_model(pc, ctx_fisher_model, &fc), KFAC_OK);
    }
    if (_i == 3) {
        ck_assert_int_eq(kfac_precond_new(2, din, dout, B, &tp.optim, &tp.kfac, &pc3), KFAC_OK);
        ck_assert_int_eq(kfac_fisher_new(nc, &fc3.f), KFAC_OK);
        ck_assert_int_eq(kfac_precond_set_fisher(pc3, ctx_fisher_vec, ctx_loss, &fc3), KFAC_OK);
        ck_assert_int_eq(kfac_precond_set_fisher_forms(pc3, ctx_fisher_forms, &fc3), KFAC_OK);
    }
    size_t P = kfac_net_n_params(na);
    float *grad = malloc(P * sizeof(float)), *gt = malloc(sizeof(float) * B * (H + 3));
    float x[MAXB * MAXIN], y[MAXB * 3], ys[MAXB * 3];
    int batch_form = 0;
    for (int step = 0; step < STEPS; step++) {
        fill(x, (size_t)B * IN, &r);
        memset(y, 0, sizeof y);
        for (int i = 0; i < B; i++)
            y[i * 3 + kfac_rng_below(&r, 3)] = 1.0f;

        /* built-in */
        ck_assert_int_eq(kfac_net_forward(na, x, B), KFAC_OK);
        ck_assert_int_eq(kfac_net_backward(na, y, NULL), KFAC_OK);
        kfac_step_ctx ctx = {na, y, B, &ra, 0, B, NULL};
        ck_assert_msg(kfac_optimizer_step_ctx(opt, kfac_net_params(na), NULL, &ctx) == KFAC_OK, "%s",
                      kfac_last_error());

        /* by hand */
        double loss = hand_passes(nb, pc, s.loss, x, y, ys, B, H, grad, gt, &rb);
        float *w[2] = {kfac_net_layer_weights(nb, 0, NULL, NULL), kfac_net_layer_weights(nb, 1, NULL, NULL)};
        const float *g[2] = {grad, grad + kfac_net_layer_offset(nb, 1)};
        const float *ab[2] = {kfac_net_layer_input(nb, 0), kfac_net_layer_input(nb, 1)};
        const float *gs[2] = {kfac_net_layer_pregrad(nb, 0), kfac_net_layer_pregrad(nb, 1)};
        const float *gl[2] = {gt, gt + B * H};
        kfac_precond_batch batch = {B, w, by_rows ? NULL : g, ab, gs, loss, by_rows ? gl : NULL};
        fc.y = y;
        fc.gout = gt + B * H;
        ck_assert_msg(kfac_precond_step(pc, &batch) == KFAC_OK, "%s", kfac_last_error());

        ck_assert_msg(memcmp(kfac_net_params(na), kfac_net_params(nb), P * sizeof(float)) == 0,
                      "step %d: the public preconditioner and the built-in optimizer differ", step + 1);
        kfac_kfac_stats ks0;
        ck_assert_int_eq(kfac_precond_get_stats(pc, &ks0), KFAC_OK);
        int kept = kfac_precond_direction_rows(pc, 0, B, jv);
        ck_assert_int_eq(kept, _i == 3 && ks0.batch_form[0]); /* the quadratic rule's batch form only */
        if (kept) { /* abar delta^T from the form's factors: as from delta itself */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, IN + 1, 1.0f, ab[0], IN + 1,
                        kfac_precond_direction(pc, 0), IN + 1, 0.0f, want, H);
            double dmax = 0.0, wmax = 0.0;
            for (int i = 0; i < B * H; i++)
                dmax = fmax(dmax, fabs((double)jv[i] - want[i])), wmax = fmax(wmax, fabs((double)want[i]));
            ck_assert_msg(wmax > 0.0 && dmax <= 1e-5 * wmax, "step %d: abar delta^T %g off (max %g)", step + 1, dmax,
                          wmax);
        }
        if (pc3) { /* the same step through the gradient: the same numbers, to rounding */
            loss = hand_passes(nc, pc3, s.loss, x, y, ys, B, H, NULL, gt, &rc);
            float *w3[2] = {kfac_net_layer_weights(nc, 0, NULL, NULL), kfac_net_layer_weights(nc, 1, NULL, NULL)};
            const float *ab3[2] = {kfac_net_layer_input(nc, 0), kfac_net_layer_input(nc, 1)};
            const float *gs3[2] = {kfac_net_layer_pregrad(nc, 0), kfac_net_layer_pregrad(nc, 1)};
            kfac_precond_batch b3 = {B, w3, NULL, ab3, gs3, loss, gl};
            fc3.y = y;
            ck_assert_msg(kfac_precond_step(pc3, &b3) == KFAC_OK, "%s", kfac_last_error());
            const float *ta = kfac_net_params(na), *tc = kfac_net_params(nc);
            double dmax = 0.0, tmax = 0.0;
            for (size_t i = 0; i < P; i++)
                dmax = fmax(dmax, fabs((double)ta[i] - tc[i])), tmax = fmax(tmax, fabs((double)ta[i]));
            ck_assert_msg(dmax <= 1e-4 * tmax, "step %d: slopes and gradient differ by %g (max |theta| %g)",
                          step + 1, dmax, tmax);
        }
        kfac_kfac_stats ks;
        ck_assert_int_eq(kfac_precond_get_stats(pc, &ks), KFAC_OK);
        batch_form |= ks.batch_form[0];
    }
    ck_assert_int_eq(batch_form, by_rows); /* the batch form was exercised, or not */
    kfac_kfac_stats st;
    ck_assert_int_eq(kfac_precond_get_stats(pc, &st), KFAC_OK);
    ck_assert_int_eq(st.stats_rounds, STEPS / 2);
    ck_assert_int_eq(kfac_precond_steps(pc), STEPS);
    free(grad);
    free(gt);
    free(jv);
    free(want);
    kfac_fisher_free(fc.f);
    kfac_fisher_free(fc3.f);
    kfac_precond_free(pc);
    kfac_precond_free(pc3);
    kfac_optimizer_free(opt);
    kfac_net_free(na);
    kfac_net_free(nb);
    kfac_net_free(nc);
}
END_TEST

/* A preconditioner saved after some steps and loaded into a fresh one
 * continues bit for bit; one for other layers is refused. */
START_TEST(test_precond_checkpoint)
{
    kfac_set_threads(1);
    int din[2] = {6, 7}, dout[2] = {6, 3};
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.cov_every = 2;
    kp.inv_every = 3;
    kfac_precond *a, *b;
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 4, NULL, &kp, &a), KFAC_OK);
    ck_assert_int_eq(kfac_precond_new(2, din, dout, 4, NULL, &kp, &b), KFAC_OK);
    float wa[57], wb[57], grad[57], ab0[24], ab1[28], gs0[24], gs1[12];
    kfac_rng r;
    kfac_rng_seed(&r, 4);
    fill(wa, 57, &r);
    float *w[2] = {wa, wa + 36};
    const float *g[2] = {grad, grad + 36}, *abar[2] = {ab0, ab1}, *gs[2] = {gs0, gs1};
    kfac_precond_batch batch = {4, w, g, abar, gs, 0.0, NULL};
    for (int step = 0; step < 10; step++) {
        if (step == 5) {
            char path[512];
            snprintf(path, sizeof path, "%s/precond.ckpt", test_tmpdir());
            ck_assert_msg(kfac_precond_save(a, path) == KFAC_OK, "%s", kfac_last_error());
            ck_assert_msg(kfac_precond_load(b, path) == KFAC_OK, "%s", kfac_last_error());
            ck_assert_int_eq(kfac_precond_steps(b), 5);
            memcpy(wb, wa, sizeof wb);
            int din1 = 6, dout1 = 6;
            kfac_precond *c;
            ck_assert_int_eq(kfac_precond_new(1, &din1, &dout1, 4, NULL, &kp, &c), KFAC_OK);
            ck_assert_int_eq(kfac_precond_load(c, path), KFAC_ERR_SHAPE);
            ck_assert_ptr_nonnull(strstr(kfac_last_error(), path));
            kfac_precond_free(c);
        }
        fill(grad, 57, &r), fill(ab0, 24, &r), fill(ab1, 28, &r), fill(gs0, 24, &r), fill(gs1, 12, &r);
        ck_assert_int_eq(kfac_precond_step(a, &batch), KFAC_OK);
        if (step >= 5) {
            float *wbp[2] = {wb, wb + 36};
            kfac_precond_batch bb = batch;
            bb.weights = wbp;
            ck_assert_int_eq(kfac_precond_step(b, &bb), KFAC_OK);
            ck_assert_msg(memcmp(wa, wb, sizeof wa) == 0, "step %d differs after loading", step + 1);
        }
    }
    kfac_precond_free(a);
    kfac_precond_free(b);
}
END_TEST

/* examples/ built against an installed copy with pkg-config alone (make
 * embed-test), run, and checked: they exit 0 only if they trained; the
 * installed man page names every `kfac train` flag; the installed Python
 * package loads the installed library; uninstall removes. */
START_TEST(test_embedding_examples)
{
    /* the build directory is the test program's (not the working
     * directory, which may be anywhere: make would build into it) */
    char cwd[1024], out[1200], cmd[4096];
    ssize_t len = readlink("/proc/self/exe", cwd, sizeof cwd - 1);
    if (len > 0 && (cwd[len] = '\0', strrchr(cwd, '/')))
        *strrchr(cwd, '/') = '\0';
    else
        ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    snprintf(out, sizeof out, "%s/embed.out", test_tmpdir());
    /* a clean environment for the inner make (no jobserver of an outer one) */
    snprintf(cmd, sizeof cmd,
             "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C '%s' B='%s' DATA='%s' embed-test >'%s' 2>&1",
             test_root(), cwd, test_data_dir(), out);
    int st = system(cmd);
    FILE *f = fopen(out, "r");
    char text[8192] = "";
    if (f) {
        text[fread(text, 1, sizeof text - 1, f)] = '\0';
        fclose(f);
    }
    ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "make embed-test failed:\n%s", text);
    ck_assert_msg(strstr(text, "embed: own_net") && strstr(text, "embed: train_api"), "%s", text);
    ck_assert_msg(strstr(text, "checkpoint loss equal"), "%s", text);
    /* the man page installed, naming every train flag, and uninstalled */
    ck_assert_msg(strstr(text, "embed: man page names the") && strstr(text, "embed: make uninstall removed"), "%s",
                  text);
    /* the installed Python package loads the installed library (not under
     * a sanitizer, whose runtime would have to come first in python3) */
    const char *sanitized = getenv("EMBED_FLAGS");
    ck_assert_msg(strstr(text, sanitized && *sanitized ? "embed: the Python package not loaded"
                                                       : "embed: python3 -m kfac --version: kfac "),
                  "%s", text);
    /* the installed kfac.pc and program give this library's version */
    char version[128];
    snprintf(version, sizeof version, "embed: version %s (", kfac_version());
    ck_assert_msg(strstr(text, version), "%s", text);
}
END_TEST

Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_misuse);
    tcase_add_test(tc, test_enum_names);
    tcase_add_test(tc, test_entry_checks);
    tcase_add_test(tc, test_hand_built_datasets);
    tcase_add_test(tc, test_threads_under_memory_limit);
    tcase_add_loop_test(tc, test_predict, 0, 3);
    tcase_add_loop_test(tc, test_precond_is_the_builtin, 0, 4);
    tcase_add_test(tc, test_precond_checkpoint);
    tcase_add_test(tc, test_embedding_examples);
    suite_add_tcase(s, tc);
    return s;
}
