/* test_handles.c - kfac_handles.h, the API for bindings: specs, parameters,
 * data sets, generators and results the library allocates, read and set by
 * name with the net file's and the parameter table's checks; data sets
 * copied from arrays and every bad value named; a trainer and a
 * preconditioner built from handles take bit for bit the steps of those
 * built from the plain structs; convolution and pooling layers added by
 * handle make nets/tiny-cnn.net's network. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kfac.h"
#include "tests.h"

#define OK(call) ck_assert_msg((call) == KFAC_OK, "%s: %s", #call, kfac_last_error())

static void assert_fails(kfac_status got, kfac_status want, const char *text)
{
    ck_assert_int_eq(got, want);
    ck_assert_msg(strstr(kfac_last_error(), text) != NULL, "'%s' lacks '%s'", kfac_last_error(), text);
}

START_TEST(test_spec_handle)
{
    kfac_net_spec *s;
    char buf[64];
    OK(kfac_net_spec_new(&s));
    ck_assert_int_eq(s->n_layers, 0);
    OK(kfac_net_spec_set(s, "inputs", "784"));
    OK(kfac_net_spec_set(s, "loss", "squared"));
    OK(kfac_net_spec_set(s, "init_sigma", "0.05"));
    OK(kfac_net_spec_add_layer(s, 32, KFAC_ACT_TANH));
    OK(kfac_net_spec_add_layer(s, 784, KFAC_ACT_LINEAR));
    OK(kfac_net_spec_validate(s));
    ck_assert_int_eq(s->inputs, 784);
    ck_assert_int_eq(s->loss, KFAC_LOSS_SQUARED);
    OK(kfac_net_spec_get(s, "inputs", buf, sizeof buf));
    ck_assert_str_eq(buf, "784");
    OK(kfac_net_spec_get(s, "loss", buf, sizeof buf));
    ck_assert_str_eq(buf, "squared");
    OK(kfac_net_spec_get(s, "init", buf, sizeof buf));
    ck_assert_str_eq(buf, "glorot");
    OK(kfac_net_spec_get(s, "init_sigma", buf, sizeof buf));
    ck_assert_float_eq(strtof(buf, NULL), 0.05f);
    OK(kfac_net_spec_get(s, "layers", buf, sizeof buf));
    ck_assert_str_eq(buf, "2");
    OK(kfac_net_spec_get(s, "units.1", buf, sizeof buf));
    ck_assert_str_eq(buf, "784");
    OK(kfac_net_spec_get(s, "activation.0", buf, sizeof buf));
    ck_assert_str_eq(buf, "tanh");
    OK(kfac_net_spec_get(s, "pool", buf, sizeof buf));
    ck_assert_str_eq(buf, "1");
    OK(kfac_net_spec_get(s, "sparse_count", buf, sizeof buf));
    ck_assert_str_eq(buf, "15");

    /* refused as the net file refuses, the spec unchanged */
    assert_fails(kfac_net_spec_set(s, "loss", "hinge"), KFAC_ERR_INVALID_ARG, "unknown loss 'hinge'");
    assert_fails(kfac_net_spec_set(s, "inputs", "0"), KFAC_ERR_INVALID_ARG, "inputs = 0 is outside [1, 10000000]");
    assert_fails(kfac_net_spec_set(s, "pool", "x"), KFAC_ERR_INVALID_ARG, "pool needs an integer");
    assert_fails(kfac_net_spec_set(s, "units", "3"), KFAC_ERR_INVALID_ARG, "unknown [net] key 'units'");
    ck_assert_int_eq(s->inputs, 784);
    ck_assert_int_eq(s->loss, KFAC_LOSS_SQUARED);
    assert_fails(kfac_net_spec_get(s, "units.2", buf, sizeof buf), KFAC_ERR_INVALID_ARG, "2 layers (0 to 1)");
    assert_fails(kfac_net_spec_get(s, "units.x", buf, sizeof buf), KFAC_ERR_INVALID_ARG, "2 layers");
    assert_fails(kfac_net_spec_get(s, "nope", buf, sizeof buf), KFAC_ERR_INVALID_ARG, "unknown network field 'nope'");
    assert_fails(kfac_net_spec_get(s, "loss", buf, 3), KFAC_ERR_INVALID_ARG, "too small");
    assert_fails(kfac_net_spec_add_layer(s, 0, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG, "units = 0");
    assert_fails(kfac_net_spec_add_layer(s, 3, KFAC_ACT_COUNT), KFAC_ERR_INVALID_ARG, "activation");
    ck_assert_int_eq(s->n_layers, 2);
    for (int l = 2; l < KFAC_MAX_LAYERS; l++)
        OK(kfac_net_spec_add_layer(s, 3, KFAC_ACT_RELU));
    assert_fails(kfac_net_spec_add_layer(s, 3, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG, "at most 32 layers");
    ck_assert_int_eq(kfac_net_spec_new(NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_spec_set(NULL, "inputs", "1"), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_spec_get(NULL, "inputs", buf, sizeof buf), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_spec_add_layer(NULL, 3, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG);
    kfac_net_spec_free(s);
    kfac_net_spec_free(NULL);

    /* a net file's text fills a handle as it fills a struct */
    OK(kfac_net_spec_new(&s));
    kfac_train_params *p;
    OK(kfac_train_params_new(&p));
    OK(kfac_netfile_parse("[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = linear\n[train]\nlr = 0.5\n", "t.net", s,
                           p));
    OK(kfac_train_params_get(p, "train.lr", buf, sizeof buf));
    ck_assert_str_eq(buf, "0.5");
    ck_assert_int_eq(s->layers[0].units, 2);
    kfac_net_spec_free(s);
    kfac_train_params_free(p);
}
END_TEST

START_TEST(test_params_handle)
{
    kfac_train_params *p, *q;
    char buf[128];
    OK(kfac_train_params_new(&p));
    kfac_train_params ref;
    kfac_train_params_init(&ref);
    ck_assert_int_eq(p->batch, ref.batch);
    ck_assert_int_eq(p->optimizer, ref.optimizer);
    OK(kfac_train_params_set(p, "kfac.damping", "0.03"));
    OK(kfac_train_params_clone(p, &q));
    OK(kfac_train_params_set(p, "kfac.damping", "0.5"));
    OK(kfac_train_params_get(q, "kfac.damping", buf, sizeof buf));
    ck_assert_float_eq(strtof(buf, NULL), 0.03f);
    ck_assert_int_eq(kfac_train_params_clone(NULL, &q), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_train_params_new(NULL), KFAC_ERR_INVALID_ARG);
    kfac_train_params_free(p);
    kfac_train_params_free(q);
    kfac_train_params_free(NULL);

    /* every parameter's description by field, and every name read back */
    OK(kfac_train_params_new(&p));
    for (int i = 0; i < kfac_param_count(); i++) {
        kfac_param_info in;
        char name[64], value[64];
        OK(kfac_param_get_info(i, &in));
        OK(kfac_param_info_get(i, "name", name, sizeof name));
        snprintf(buf, sizeof buf, "%s.%s", in.section, in.key);
        ck_assert_str_eq(name, buf);
        OK(kfac_param_info_get(i, "flag", buf, sizeof buf));
        ck_assert_str_eq(buf, in.flag);
        OK(kfac_param_info_get(i, "range", buf, sizeof buf));
        ck_assert_str_eq(buf, in.range);
        OK(kfac_param_info_get(i, "default", buf, sizeof buf));
        ck_assert_str_eq(buf, in.def);
        OK(kfac_param_info_get(i, "resets", buf, sizeof buf));
        ck_assert_str_eq(buf, in.resets ? in.resets : "");
        OK(kfac_param_info_get(i, "doc", buf, sizeof buf));
        ck_assert_str_eq(buf, in.doc);
        OK(kfac_param_info_get(i, "arg", buf, sizeof buf));
        OK(kfac_param_info_get(i, "section", buf, sizeof buf));
        OK(kfac_param_info_get(i, "key", buf, sizeof buf));
        OK(kfac_train_params_get(p, name, value, sizeof value));
        OK(kfac_train_params_set(p, name, value));
    }
    assert_fails(kfac_param_info_get(0, "colour", buf, sizeof buf), KFAC_ERR_INVALID_ARG,
                 "unknown parameter field 'colour'");
    assert_fails(kfac_param_info_get(kfac_param_count(), "name", buf, sizeof buf), KFAC_ERR_INVALID_ARG,
                 "no parameter");
    assert_fails(kfac_param_info_get(0, "doc", buf, 4), KFAC_ERR_INVALID_ARG, "too small");
    kfac_train_params_free(p);
}
END_TEST

START_TEST(test_dataset_from_arrays)
{
    float x[12];
    int labels[4] = {0, 2, 1, 2};
    for (int i = 0; i < 12; i++)
        x[i] = (float)i / 4;
    kfac_dataset *d;
    OK(kfac_dataset_from_arrays(x, labels, 4, 3, 0, 0, 0, &d));
    x[0] = 99.0f, labels[0] = 7; /* copied */
    ck_assert_int_eq(kfac_dataset_n(d), 4);
    ck_assert_int_eq(kfac_dataset_features(d), 3);
    ck_assert_int_eq(kfac_dataset_classes(d), 3);
    ck_assert_int_eq(kfac_dataset_rows(d), 1);
    ck_assert_int_eq(kfac_dataset_cols(d), 3);
    ck_assert_float_eq(kfac_dataset_x(d)[0], 0.0f);
    ck_assert_float_eq(kfac_dataset_x(d)[11], 2.75f);
    ck_assert_int_eq(kfac_dataset_labels(d)[0], 0);
    ck_assert_int_eq(kfac_dataset_labels(d)[3], 2);
    kfac_dataset_delete(d);
    labels[0] = 0;

    float img[2 * 16] = {0};
    OK(kfac_dataset_from_arrays(img, NULL, 2, 16, 4, 4, 0, &d));
    ck_assert_ptr_null(kfac_dataset_labels(d));
    ck_assert_int_eq(kfac_dataset_classes(d), 0);
    kfac_dataset *pooled;
    OK(kfac_dataset_new(&pooled));
    OK(kfac_dataset_pool(d, 2, pooled));
    ck_assert_int_eq(kfac_dataset_features(pooled), 4);
    kfac_dataset_delete(pooled);
    kfac_dataset_delete(d);
    OK(kfac_dataset_from_arrays(x, labels, 4, 3, 0, 0, 10, &d));
    ck_assert_int_eq(kfac_dataset_classes(d), 10);
    kfac_dataset_delete(d);

    /* every bad value named, nothing made */
    d = (kfac_dataset *)1;
    x[5] = NAN;
    assert_fails(kfac_dataset_from_arrays(x, labels, 4, 3, 0, 0, 0, &d), KFAC_ERR_INVALID_ARG,
                 "x[1][2] = nan is not finite");
    ck_assert_ptr_null(d);
    x[5] = INFINITY;
    assert_fails(kfac_dataset_from_arrays(x, labels, 4, 3, 0, 0, 0, &d), KFAC_ERR_INVALID_ARG, "x[1][2] = inf");
    x[5] = 1.0f;
    labels[2] = 3;
    assert_fails(kfac_dataset_from_arrays(x, labels, 4, 3, 0, 0, 3, &d), KFAC_ERR_INVALID_ARG,
                 "labels[2] = 3 is outside [0, 3)");
    labels[2] = -1;
    assert_fails(kfac_dataset_from_arrays(x, labels, 4, 3, 0, 0, 0, &d), KFAC_ERR_INVALID_ARG,
                 "labels[2] = -1 is outside [0, 256)");
    labels[2] = 1;
    assert_fails(kfac_dataset_from_arrays(x, labels, 4, 3, 0, 0, 257, &d), KFAC_ERR_INVALID_ARG,
                 "classes = 257 is outside [0, 256]");
    assert_fails(kfac_dataset_from_arrays(x, labels, 4, 3, 2, 2, 0, &d), KFAC_ERR_SHAPE, "2 x 2 are not 3");
    assert_fails(kfac_dataset_from_arrays(x, labels, 0, 3, 0, 0, 0, &d), KFAC_ERR_INVALID_ARG, "0 examples");
    assert_fails(kfac_dataset_from_arrays(x, labels, 4, 0, 0, 0, 0, &d), KFAC_ERR_INVALID_ARG, "0 features");
    assert_fails(kfac_dataset_from_arrays(NULL, labels, 4, 3, 0, 0, 0, &d), KFAC_ERR_INVALID_ARG, "x is NULL");
    ck_assert_int_eq(kfac_dataset_from_arrays(x, labels, 4, 3, 0, 0, 0, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_dataset_new(NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_dataset_n(NULL), 0);
    ck_assert_int_eq(kfac_dataset_features(NULL), 0);
    ck_assert_int_eq(kfac_dataset_classes(NULL), 0);
    ck_assert_int_eq(kfac_dataset_rows(NULL), 0);
    ck_assert_int_eq(kfac_dataset_cols(NULL), 0);
    ck_assert_ptr_null(kfac_dataset_x(NULL));
    ck_assert_ptr_null(kfac_dataset_labels(NULL));
    kfac_dataset_delete(NULL);
}
END_TEST

/* The same run built from handles (a net file's text, parameters set by
 * name, data loaded into kfac_dataset_new, copied from arrays) and from the
 * plain structs: the same weights, bit for bit; the statistics by name. */
START_TEST(test_trainer_from_handles)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/handles_data", test_tmpdir());
    test_write_mnist(dir, 96, 4);
    kfac_set_threads(1);
    const char *text = "[net]\ninputs = 784\n[dense]\nunits = 16\nactivation = tanh\n[dense]\nunits = 10\n"
                       "activation = linear\n";

    /* the plain structs */
    kfac_net_spec spec;
    kfac_train_params tp;
    kfac_dataset data;
    OK(kfac_netfile_parse(text, "t.net", &spec, &tp));
    tp.optimizer = KFAC_OPT_KFAC;
    tp.batch = 32;
    tp.kfac.cov_every = 2;
    tp.kfac.inv_every = 3;
    OK(kfac_mnist_load(dir, "train", &data));
    kfac_trainer *a;
    OK(kfac_trainer_new(&spec, &tp, &data, &a));
    kfac_epoch_stats sa;
    OK(kfac_trainer_epoch(a, NULL, NULL, &sa));

    /* handles */
    kfac_net_spec *hs;
    kfac_train_params *hp;
    kfac_dataset *loaded, *copied;
    OK(kfac_net_spec_new(&hs));
    OK(kfac_train_params_new(&hp));
    OK(kfac_netfile_parse(text, "t.net", hs, hp));
    OK(kfac_train_params_set(hp, "optimizer", "kfac"));
    OK(kfac_train_params_set(hp, "batch", "32"));
    OK(kfac_train_params_set(hp, "cov_every", "2"));
    OK(kfac_train_params_set(hp, "inv_every", "3"));
    OK(kfac_dataset_new(&loaded));
    OK(kfac_data_load(dir, "train", 0, 1, loaded));
    int n = kfac_dataset_n(loaded), *labels = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++)
        labels[i] = kfac_dataset_labels(loaded)[i];
    OK(kfac_dataset_from_arrays(kfac_dataset_x(loaded), labels, n, kfac_dataset_features(loaded), 28, 28, 10,
                                &copied));
    free(labels);
    kfac_dataset_delete(loaded);
    kfac_trainer *b;
    OK(kfac_trainer_new(hs, hp, copied, &b));
    kfac_epoch_stats *sb;
    OK(kfac_epoch_stats_new(&sb));
    OK(kfac_trainer_epoch(b, NULL, NULL, sb));

    kfac_net *na = kfac_trainer_net(a), *nb = kfac_trainer_net(b);
    ck_assert(memcmp(kfac_net_params(na), kfac_net_params(nb), kfac_net_n_params(na) * sizeof(float)) == 0);
    double v;
    OK(kfac_epoch_stats_get(sb, "train_loss", &v));
    ck_assert(v == sa.train_loss);
    OK(kfac_epoch_stats_get(sb, "epoch", &v));
    ck_assert(v == 1.0);
    for (int i = 0; kfac_epoch_stats_field(i); i++)
        OK(kfac_epoch_stats_get(sb, kfac_epoch_stats_field(i), &v));
    ck_assert_ptr_null(kfac_epoch_stats_field(-1));
    assert_fails(kfac_epoch_stats_get(sb, "accuracy", &v), KFAC_ERR_INVALID_ARG, "unknown field 'accuracy'");
    ck_assert_int_eq(kfac_epoch_stats_get(NULL, "epoch", &v), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_epoch_stats_new(NULL), KFAC_ERR_INVALID_ARG);

    kfac_kfac_stats ka, *kb;
    OK(kfac_trainer_kfac_stats(a, &ka));
    OK(kfac_kfac_stats_new(&kb));
    OK(kfac_trainer_kfac_stats(b, kb));
    OK(kfac_kfac_stats_get(kb, "inversions", &v));
    ck_assert(v == (double)ka.inversions && v > 0);
    OK(kfac_kfac_stats_get(kb, "damping", &v));
    ck_assert(v == ka.damping);
    OK(kfac_kfac_stats_get(kb, "rank_g.1", &v));
    ck_assert(v == 10.0 && ka.rank_g[1] == 10);
    OK(kfac_kfac_stats_get(kb, "flops_batch.0", &v));
    assert_fails(kfac_kfac_stats_get(kb, "rank_a.2", &v), KFAC_ERR_INVALID_ARG, "needs a layer 0 to 1");
    assert_fails(kfac_kfac_stats_get(kb, "rank_a", &v), KFAC_ERR_INVALID_ARG, "unknown field 'rank_a'");
    int fields = 0;
    for (int i = 0; kfac_kfac_stats_field(i); i++)
        fields++;
    ck_assert_int_eq(fields, 20);
    ck_assert_int_eq(kfac_kfac_stats_new(NULL), KFAC_ERR_INVALID_ARG);

    kfac_kfac_stats_free(kb);
    kfac_epoch_stats_free(sb);
    kfac_trainer_free(a);
    kfac_trainer_free(b);
    kfac_dataset_delete(copied);
    kfac_dataset_free(&data);
    kfac_net_spec_free(hs);
    kfac_train_params_free(hp);
}
END_TEST

/* kfac_precond_new_params and kfac_precond_step_arrays against
 * kfac_precond_new with the resolved structs and kfac_precond_step. */
START_TEST(test_precond_from_handles)
{
    enum { L = 2, B = 12, STEPS = 9 };
    int din[L] = {5, 7}, dout[L] = {6, 3};
    kfac_train_params *hp;
    OK(kfac_train_params_new(&hp));
    OK(kfac_train_params_set(hp, "train.lr", "0.2"));
    OK(kfac_train_params_set(hp, "kfac.momentum", "0.5"));
    OK(kfac_train_params_set(hp, "kfac.cov_every", "2"));
    OK(kfac_train_params_set(hp, "kfac.inv_every", "3"));
    OK(kfac_train_params_set(hp, "weight_decay", "0.001"));
    kfac_precond *pa, *pb;
    OK(kfac_precond_new_params(L, din, dout, B, hp, &pa));
    kfac_optim_params op;
    kfac_optim_params_init(&op);
    op.lr = 0.2f;
    op.weight_decay = 0.001f;
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.momentum = 0.5f;
    kp.cov_every = 2;
    kp.inv_every = 3;
    OK(kfac_precond_new(L, din, dout, B, &op, &kp, &pb));
    kfac_rng r;
    kfac_rng_seed(&r, 5);
    float wa0[30], wa1[21], wb0[30], wb1[21], gr0[30], gr1[21], ab0[B * 5], ab1[B * 7], gs0[B * 6], gs1[B * 3];
    for (int i = 0; i < 30; i++)
        wa0[i] = wb0[i] = (float)kfac_rng_normal(&r);
    for (int i = 0; i < 21; i++)
        wa1[i] = wb1[i] = (float)kfac_rng_normal(&r);
    float *wa[L] = {wa0, wa1}, *wb[L] = {wb0, wb1};
    const float *gr[L] = {gr0, gr1}, *ab[L] = {ab0, ab1}, *gs[L] = {gs0, gs1};
    for (int k = 0; k < STEPS; k++) {
        float *bufs[] = {gr0, gr1, ab0, ab1, gs0, gs1};
        size_t sizes[] = {30, 21, B * 5, B * 7, B * 6, B * 3};
        for (int j = 0; j < 6; j++)
            for (size_t i = 0; i < sizes[j]; i++)
                bufs[j][i] = (float)kfac_rng_normal(&r) * 0.3f;
        OK(kfac_precond_step_arrays(pa, B, wa, gr, ab, gs, NULL, 0.0));
        kfac_precond_batch batch = {B, wb, gr, ab, gs, 0.0, NULL};
        OK(kfac_precond_step(pb, &batch));
        ck_assert(memcmp(wa0, wb0, sizeof wa0) == 0 && memcmp(wa1, wb1, sizeof wa1) == 0);
    }
    ck_assert_int_eq(kfac_precond_steps(pa), STEPS);
    /* checked as kfac_precond_step checks: statistics due without abar */
    while (!kfac_precond_stats_due(pa))
        OK(kfac_precond_step_arrays(pa, B, wa, gr, NULL, NULL, NULL, 0.0));
    long steps = kfac_precond_steps(pa);
    ck_assert_int_ne(kfac_precond_step_arrays(pa, B, wa, gr, NULL, gs, NULL, 0.0), KFAC_OK);
    ck_assert_int_ne(kfac_precond_step_arrays(pa, 0, wa, gr, ab, gs, NULL, 0.0), KFAC_OK);
    ck_assert_int_eq(kfac_precond_step_arrays(NULL, B, wa, gr, ab, gs, NULL, 0.0), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_precond_steps(pa), steps);
    /* parameters are validated first */
    kfac_precond *none = (kfac_precond *)1;
    OK(kfac_train_params_set(hp, "kfac.damping", "0.5"));
    hp->kfac.damping = -1.0f; /* as a caller writing the struct might */
    assert_fails(kfac_precond_new_params(L, din, dout, B, hp, &none), KFAC_ERR_INVALID_ARG, "damping");
    OK(kfac_precond_new_params(L, din, dout, B, NULL, &none));
    kfac_precond_free(none);
    kfac_precond_free(pa);
    kfac_precond_free(pb);
    kfac_train_params_free(hp);
}
END_TEST

/* get(name) must be want */
static void assert_field(const kfac_net_spec *s, const char *name, const char *want)
{
    char buf[64];
    OK(kfac_net_spec_get(s, name, buf, sizeof buf));
    ck_assert_msg(strcmp(buf, want) == 0, "%s: '%s', not '%s'", name, buf, want);
}

START_TEST(test_spec_conv_layers)
{
    /* nets/tiny-cnn.net from handles: the same layers as the file's */
    kfac_net_spec *s, *f;
    kfac_train_params *p;
    OK(kfac_net_spec_new(&s));
    OK(kfac_net_spec_set(s, "inputs", "196"));
    assert_field(s, "shape", "");
    OK(kfac_net_spec_set(s, "shape", "14x14x1"));
    OK(kfac_net_spec_set(s, "pool", "2"));
    OK(kfac_net_spec_add_conv(s, 4, 3, 3, 0, KFAC_PAD_SAME, KFAC_ACT_TANH));
    OK(kfac_net_spec_add_pool(s, KFAC_LAYER_MAXPOOL, 2, 0));
    OK(kfac_net_spec_add_layer(s, 10, KFAC_ACT_LINEAR));
    OK(kfac_net_spec_validate(s));
    char path[1024];
    snprintf(path, sizeof path, "%s/nets/tiny-cnn.net", test_root());
    OK(kfac_net_spec_new(&f));
    OK(kfac_train_params_new(&p));
    OK(kfac_netfile_load(path, f, p));
    ck_assert_int_eq(s->n_layers, f->n_layers);
    ck_assert(memcmp(s->layers, f->layers, sizeof s->layers) == 0);
    ck_assert_int_eq(s->inputs, f->inputs);
    ck_assert_int_eq(s->input_pool, f->input_pool);
    ck_assert(s->input_h == f->input_h && s->input_w == f->input_w && s->input_c == f->input_c);

    /* read back by the net file's names */
    assert_field(s, "shape", "14x14x1");
    assert_field(s, "layers", "3");
    assert_field(s, "kind.0", "conv");
    assert_field(s, "units.0", "4");
    assert_field(s, "kernel.0", "3x3");
    assert_field(s, "stride.0", "1");
    assert_field(s, "pad.0", "same");
    assert_field(s, "activation.0", "tanh");
    assert_field(s, "kind.1", "maxpool");
    assert_field(s, "kernel.1", "2x2");
    assert_field(s, "stride.1", "2");
    assert_field(s, "activation.1", "linear");
    assert_field(s, "kind.2", "dense");
    assert_field(s, "units.2", "10");
    char buf[64];
    assert_fails(kfac_net_spec_get(s, "pad.1", buf, sizeof buf), KFAC_ERR_INVALID_ARG,
                 "layer 1 is a maxpool layer, which has no pad");
    assert_fails(kfac_net_spec_get(s, "units.1", buf, sizeof buf), KFAC_ERR_INVALID_ARG, "which has no units");
    assert_fails(kfac_net_spec_get(s, "kernel.2", buf, sizeof buf), KFAC_ERR_INVALID_ARG,
                 "layer 2 is a dense layer, which has no kernel");
    assert_fails(kfac_net_spec_get(s, "stride.3", buf, sizeof buf), KFAC_ERR_INVALID_ARG, "3 layers (0 to 2)");
    assert_fails(kfac_net_spec_get(s, "shape", buf, 4), KFAC_ERR_INVALID_ARG, "too small");

    /* and the network they make is the file's: the same weights and outputs */
    kfac_net *na, *nb;
    kfac_rng ra, rb;
    OK(kfac_net_new(s, 3, &na));
    OK(kfac_net_new(f, 3, &nb));
    kfac_rng_seed(&ra, 9);
    kfac_rng_seed(&rb, 9);
    OK(kfac_net_init_weights(na, &ra));
    OK(kfac_net_init_weights(nb, &rb));
    ck_assert_uint_eq(kfac_net_n_params(na), 2010);
    ck_assert(memcmp(kfac_net_params(na), kfac_net_params(nb), 2010 * sizeof(float)) == 0);
    ck_assert_int_eq(kfac_net_layer_positions(na, 0), 196);
    kfac_net_free(na);
    kfac_net_free(nb);

    /* explicit values, an average pooling with its own stride */
    OK(kfac_net_spec_add_conv(s, 2, 5, 3, 2, 1, KFAC_ACT_RELU));
    OK(kfac_net_spec_add_pool(s, KFAC_LAYER_AVGPOOL, 3, 1));
    assert_field(s, "kernel.3", "5x3");
    assert_field(s, "stride.3", "2");
    assert_field(s, "pad.3", "1");
    assert_field(s, "kind.4", "avgpool");
    assert_field(s, "stride.4", "1");

    /* refused, the spec unchanged */
    int n = s->n_layers;
    assert_fails(kfac_net_spec_add_conv(s, 0, 3, 3, 1, 0, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG,
                 "layer 6: channels = 0 is outside [1, 1000000]");
    assert_fails(kfac_net_spec_add_conv(s, 4, 65, 3, 1, 0, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG,
                 "kernel_h = 65 is outside [1, 64]");
    assert_fails(kfac_net_spec_add_conv(s, 4, 3, 0, 1, 0, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG, "kernel_w = 0");
    assert_fails(kfac_net_spec_add_conv(s, 4, 3, 3, -1, 0, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG, "stride = -1");
    assert_fails(kfac_net_spec_add_conv(s, 4, 3, 3, 1, -2, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG,
                 "pad = -2 is neither KFAC_PAD_SAME nor in [0, 63]");
    assert_fails(kfac_net_spec_add_conv(s, 4, 3, 3, 1, 0, KFAC_ACT_COUNT), KFAC_ERR_INVALID_ARG, "activation");
    assert_fails(kfac_net_spec_add_pool(s, KFAC_LAYER_CONV, 2, 0), KFAC_ERR_INVALID_ARG, "is not a pooling");
    assert_fails(kfac_net_spec_add_pool(s, KFAC_LAYER_MAXPOOL, 0, 0), KFAC_ERR_INVALID_ARG, "size = 0");
    assert_fails(kfac_net_spec_add_pool(s, KFAC_LAYER_AVGPOOL, 2, 65), KFAC_ERR_INVALID_ARG, "stride = 65");
    ck_assert_int_eq(s->n_layers, n);
    ck_assert_int_eq(kfac_net_spec_add_conv(NULL, 4, 3, 3, 1, 0, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_net_spec_add_pool(NULL, KFAC_LAYER_MAXPOOL, 2, 0), KFAC_ERR_INVALID_ARG);
    /* what depends on the image is the validation's */
    kfac_net_spec *e;
    OK(kfac_net_spec_new(&e));
    OK(kfac_net_spec_set(e, "inputs", "16"));
    OK(kfac_net_spec_add_conv(e, 2, 2, 2, 1, KFAC_PAD_SAME, KFAC_ACT_RELU));
    OK(kfac_net_spec_add_layer(e, 3, KFAC_ACT_LINEAR));
    assert_fails(kfac_net_spec_validate(e), KFAC_ERR_INVALID_ARG, "pad = same needs an odd kernel");
    kfac_net_spec_free(e);
    for (int l = n; l < KFAC_MAX_LAYERS; l++)
        OK(kfac_net_spec_add_pool(s, KFAC_LAYER_MAXPOOL, 1, 0));
    assert_fails(kfac_net_spec_add_conv(s, 4, 3, 3, 1, 0, KFAC_ACT_RELU), KFAC_ERR_INVALID_ARG, "at most 32 layers");
    assert_fails(kfac_net_spec_add_pool(s, KFAC_LAYER_MAXPOOL, 2, 0), KFAC_ERR_INVALID_ARG, "at most 32 layers");
    kfac_net_spec_free(s);
    kfac_net_spec_free(f);
    kfac_train_params_free(p);
}
END_TEST

/* kfac_precond_new_params_positions takes the steps of
 * kfac_precond_new_positions with the same settings, bit for bit */
START_TEST(test_precond_positions_from_handles)
{
    enum { L = 2, B = 6, P0 = 4, STEPS = 7 };
    int din[L] = {10, 5}, dout[L] = {3, 2}, pos[L] = {P0, 1};
    kfac_train_params *hp;
    OK(kfac_train_params_new(&hp));
    OK(kfac_train_params_set(hp, "train.lr", "0.1"));
    OK(kfac_train_params_set(hp, "kfac.cov_every", "2"));
    OK(kfac_train_params_set(hp, "kfac.inv_every", "3"));
    OK(kfac_train_params_set(hp, "kfac.damping", "0.05"));
    kfac_precond *pa, *pb;
    OK(kfac_precond_new_params_positions(L, din, dout, pos, B, hp, &pa));
    kfac_optim_params op;
    kfac_optim_params_init(&op);
    op.lr = 0.1f;
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.cov_every = 2;
    kp.inv_every = 3;
    kp.damping = 0.05f;
    OK(kfac_precond_new_positions(L, din, dout, pos, B, &op, &kp, &pb));
    kfac_rng r;
    kfac_rng_seed(&r, 3);
    float wa0[30], wa1[10], wb0[30], wb1[10];
    float ab0[B * P0 * 10], ab1[B * 5], g0[B * P0 * 3], g1[B * 2];
    for (int i = 0; i < 30; i++)
        wa0[i] = wb0[i] = (float)kfac_rng_normal(&r);
    for (int i = 0; i < 10; i++)
        wa1[i] = wb1[i] = (float)kfac_rng_normal(&r);
    float *wa[L] = {wa0, wa1}, *wb[L] = {wb0, wb1};
    const float *ab[L] = {ab0, ab1}, *g[L] = {g0, g1};
    for (int k = 0; k < STEPS; k++) {
        float *bufs[] = {ab0, ab1, g0, g1};
        size_t sizes[] = {B * P0 * 10, B * 5, B * P0 * 3, B * 2};
        for (int j = 0; j < 4; j++)
            for (size_t i = 0; i < sizes[j]; i++)
                bufs[j][i] = (float)kfac_rng_normal(&r) * 0.3f;
        /* the rows form: the gradient (1/B) g^T abar over B x positions rows */
        OK(kfac_precond_step_arrays(pa, B, wa, NULL, ab, g, g, 0.0));
        kfac_precond_batch batch = {B, wb, NULL, ab, g, 0.0, g};
        OK(kfac_precond_step(pb, &batch));
        ck_assert(memcmp(wa0, wb0, sizeof wa0) == 0 && memcmp(wa1, wb1, sizeof wa1) == 0);
    }
    /* refused: bad positions, the block-tridiagonal inverse with
     * positions; EKFAC takes them */
    kfac_precond *none = (kfac_precond *)1;
    int bad[L] = {0, 1};
    assert_fails(kfac_precond_new_params_positions(L, din, dout, bad, B, hp, &none), KFAC_ERR_INVALID_ARG,
                 "0 positions per example");
    OK(kfac_train_params_set(hp, "kfac.inversion", "tridiag"));
    assert_fails(kfac_precond_new_params_positions(L, din, dout, pos, B, hp, &none), KFAC_ERR_INVALID_ARG,
                 "inversion tridiag: for dense layers only");
    OK(kfac_precond_new_params_positions(L, din, dout, NULL, B, hp, &none));
    kfac_precond_free(none);
    OK(kfac_train_params_set(hp, "kfac.inversion", "ekfac"));
    OK(kfac_precond_new_params_positions(L, din, dout, pos, B, hp, &none));
    kfac_precond_free(none);
    kfac_precond_free(pa);
    kfac_precond_free(pb);
    kfac_train_params_free(hp);
}
END_TEST

START_TEST(test_rng_handle)
{
    kfac_rng *h, r;
    OK(kfac_rng_new(42, &h));
    kfac_rng_seed(&r, 42);
    for (int i = 0; i < 4; i++)
        ck_assert(kfac_rng_next(h) == kfac_rng_next(&r));
    ck_assert_int_eq(kfac_rng_new(1, NULL), KFAC_ERR_INVALID_ARG);
    kfac_rng_free(h);
    kfac_rng_free(NULL);
}
END_TEST

Suite *handles_suite(void)
{
    Suite *s = suite_create("handles");
    TCase *tc = tcase_create("handles");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_spec_handle);
    tcase_add_test(tc, test_params_handle);
    tcase_add_test(tc, test_dataset_from_arrays);
    tcase_add_test(tc, test_trainer_from_handles);
    tcase_add_test(tc, test_precond_from_handles);
    tcase_add_test(tc, test_spec_conv_layers);
    tcase_add_test(tc, test_precond_positions_from_handles);
    tcase_add_test(tc, test_rng_handle);
    suite_add_tcase(s, tc);
    return s;
}
