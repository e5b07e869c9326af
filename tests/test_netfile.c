/* test_netfile.c - the net-file parser: the shipped nets/ files, every
 * error kind with its "file:line:" detail, comments, defaults and I/O. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kfac.h"
#include "tests.h"

/* A valid minimal file that error cases extend or break. */
#define NET_OK "[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = linear\n"

static kfac_status parse(const char *text, kfac_net_spec *spec, kfac_train_params *train)
{
    return kfac_netfile_parse(text, "t.net", spec, train);
}

static void load_net(const char *name, kfac_net_spec *spec, kfac_train_params *train)
{
    char path[512];
    snprintf(path, sizeof path, "%s/nets/%s", test_root(), name);
    kfac_status st = kfac_netfile_load(path, spec, train);
    ck_assert_msg(st == KFAC_OK, "%s: %s (%s)", path, kfac_strerror(st), kfac_last_error());
}

static void write_file(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static void check_layers(const kfac_net_spec *s, const int *units, const kfac_activation *act,
                         int n)
{
    ck_assert_int_eq(s->n_layers, n);
    for (int l = 0; l < n; l++) {
        ck_assert_msg(s->layers[l].units == units[l], "layer %d: units %d, want %d", l + 1,
                      s->layers[l].units, units[l]);
        ck_assert_msg(s->layers[l].activation == act[l], "layer %d: activation %s, want %s",
                      l + 1, kfac_activation_name(s->layers[l].activation),
                      kfac_activation_name(act[l]));
    }
}

/* ------------------------------------------------------- shipped nets */

START_TEST(test_fmnist_mlp)
{
    kfac_net_spec s;
    kfac_train_params t;
    load_net("fmnist-mlp.net", &s, &t);
    const int units[] = {1000, 500, 100, 10};
    const kfac_activation act[] = {KFAC_ACT_RELU, KFAC_ACT_RELU, KFAC_ACT_RELU, KFAC_ACT_LINEAR};
    ck_assert_int_eq(s.inputs, 784);
    check_layers(&s, units, act, 4);
    ck_assert_int_eq(s.loss, KFAC_LOSS_SOFTMAX_XENT);
    ck_assert_int_eq(s.init, KFAC_INIT_TRUNC_NORMAL);
    ck_assert_float_eq_tol(s.init_sigma, 0.03f, 1e-7f);
    ck_assert_int_eq(t.optimizer, KFAC_OPT_MOMENTUM);
    ck_assert_float_eq_tol(t.optim.lr, 0.05f, 1e-7f);
    ck_assert_float_eq_tol(t.optim.momentum, 0.9f, 1e-7f);
    ck_assert_int_eq(t.batch, 128);
    ck_assert_int_eq(t.epochs, 10);
    ck_assert_uint_eq(t.seed, 1);
}
END_TEST

START_TEST(test_mnist_autoencoder)
{
    kfac_net_spec s;
    kfac_train_params t;
    load_net("mnist-autoencoder.net", &s, &t);
    const int units[] = {1000, 500, 250, 30, 250, 500, 1000, 784};
    const kfac_activation S = KFAC_ACT_SIGMOID, L = KFAC_ACT_LINEAR;
    const kfac_activation act[] = {S, S, S, L, S, S, S, L};
    ck_assert_int_eq(s.inputs, 784);
    check_layers(&s, units, act, 8);
    ck_assert_int_eq(s.layers[s.n_layers - 1].units, s.inputs); /* images are the targets */
    ck_assert_int_eq(s.loss, KFAC_LOSS_SIGMOID_XENT);
    ck_assert_int_eq(s.init, KFAC_INIT_SPARSE);
    ck_assert_int_eq(s.sparse_count, 15);
    ck_assert_int_eq(t.optimizer, KFAC_OPT_NESTEROV);
    ck_assert_float_eq_tol(t.optim.lr, 0.01f, 1e-8f);
    ck_assert_float_eq_tol(t.optim.momentum, 0.99f, 1e-7f);
    ck_assert_int_eq(t.batch, 500);
    ck_assert_int_eq(t.epochs, 10);
    ck_assert_uint_eq(t.seed, 1);
}
END_TEST

START_TEST(test_small)
{
    kfac_net_spec s;
    kfac_train_params t;
    load_net("small.net", &s, &t);
    const int units[] = {32, 10};
    const kfac_activation act[] = {KFAC_ACT_RELU, KFAC_ACT_LINEAR};
    ck_assert_int_eq(s.inputs, 784);
    check_layers(&s, units, act, 2);
    ck_assert_int_eq(s.loss, KFAC_LOSS_SOFTMAX_XENT);
    ck_assert_int_eq(s.init, KFAC_INIT_GLOROT);
    ck_assert_int_eq(t.optimizer, KFAC_OPT_MOMENTUM);
    ck_assert_float_eq_tol(t.optim.lr, 0.05f, 1e-7f);
    ck_assert_float_eq_tol(t.optim.momentum, 0.9f, 1e-7f);
    ck_assert_int_eq(t.batch, 64);
    ck_assert_int_eq(t.epochs, 2);
    ck_assert_uint_eq(t.seed, 1);
}
END_TEST

START_TEST(test_tiny_and_kfac_sections)
{
    kfac_net_spec s;
    kfac_train_params t;
    load_net("tiny.net", &s, &t);
    ck_assert_int_eq(s.inputs, 49);
    ck_assert_int_eq(s.input_pool, 4);
    ck_assert_int_eq(t.optimizer, KFAC_OPT_KFAC);
    load_net("fmnist-mlp.net", &s, &t);
    ck_assert_float_eq_tol(t.kfac.lr, 0.03f, 1e-7f);
    ck_assert_float_eq_tol(t.kfac.damping, 0.1f, 1e-7f);
    ck_assert_int_eq(t.kfac.inv_every, 100);
    ck_assert_int_eq(s.input_pool, 1);

    const char *text = "[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = linear\n"
                       "[kfac]\ndamping = 0.5\ndecay = 0.9\ncov_every = 3\ninv_every = 7\n"
                       "stat_fraction = 0.25\nfisher = empirical\ninversion = eigen\nrule = quadratic\n"
                       "kl_clip = 0.01\nlm_every = 2\nlr = 0.2\nmomentum = 0.5\n";
    ck_assert_msg(parse(text, &s, &t) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_float_eq_tol(t.kfac.damping, 0.5f, 1e-7f);
    ck_assert_float_eq_tol(t.kfac.decay, 0.9f, 1e-7f);
    ck_assert_int_eq(t.kfac.cov_every, 3);
    ck_assert_int_eq(t.kfac.inv_every, 7);
    ck_assert_float_eq_tol(t.kfac.stat_fraction, 0.25f, 1e-7f);
    ck_assert_int_eq(t.kfac.fisher, KFAC_FISHER_EMPIRICAL);
    ck_assert_int_eq(t.kfac.inversion, KFAC_INV_EIGEN);
    ck_assert_int_eq(t.kfac.rule, KFAC_RULE_QUADRATIC);
    ck_assert_float_eq_tol(t.kfac.kl_clip, 0.01f, 1e-7f);
    ck_assert_int_eq(t.kfac.lm_every, 2);
    ck_assert_float_eq_tol(t.kfac.lr, 0.2f, 1e-7f);
    ck_assert_float_eq_tol(t.kfac.momentum, 0.5f, 1e-7f);

    static const struct {
        const char *tail, *expect;
    } bad[] = {
        {"[kfac]\ndamping = 0\n", "t.net:7: damping = 0"},
        {"[kfac]\nfisher = exact\n", "t.net:7: unknown Fisher kind 'exact'"},
        {"[kfac]\nrule = newton\n", "t.net:7: unknown step rule 'newton'"},
        {"[kfac]\nstat_fraction = 1.5\n", "t.net:7: stat_fraction = 1.5"},
        {"[kfac]\ninv_every = 0\n", "t.net:7: inv_every = 0"},
        {"[kfac]\ntau = 3\n", "t.net:7: unknown key 'tau' in [kfac]"},
        {"[kfac]\nmomentum = 1\n", "t.net:7: momentum = 1"},
        {"[net]\npool = 0\n", "t.net:6: second [net] section"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = linear\n%s", bad[i].tail);
        ck_assert_int_eq(parse(buf, &s, &t), KFAC_ERR_PARSE);
        ck_assert_msg(strstr(kfac_last_error(), bad[i].expect) != NULL, "case %zu: '%s' lacks '%s'", i,
                      kfac_last_error(), bad[i].expect);
    }
    ck_assert_int_eq(parse("[net]\ninputs = 4\npool = 65\n[dense]\nunits = 2\nactivation = linear\n", &s, &t),
                     KFAC_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "t.net:3: pool = 65"));
}
END_TEST

/* ------------------------------------------------------ valid syntax */

START_TEST(test_comments_and_spacing)
{
    const char *text = "; leading comment\r\n"
                       "# another\n"
                       "\n"
                       "  [ net ]   # header comment\n"
                       "inputs=784# no spaces, comment glued on\n"
                       "loss = squared ; semicolon comment\n"
                       "\t init_sigma\t=\t0.5\t\n"
                       "[dense]\r\n"
                       "units = 7   # seven\r\n"
                       "activation = tanh\n"
                       "[train]\n"
                       "optimizer = adam\n"
                       "beta1 = 0.8\n"
                       "beta2 = 0.99\n"
                       "eps = 1e-6\n"
                       "weight_decay = 0.0005\n"
                       "seed = 18446744073709551615"; /* no final newline */
    kfac_net_spec s;
    kfac_train_params t;
    kfac_status st = parse(text, &s, &t);
    ck_assert_msg(st == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(s.inputs, 784);
    ck_assert_int_eq(s.loss, KFAC_LOSS_SQUARED);
    ck_assert_float_eq_tol(s.init_sigma, 0.5f, 1e-7f);
    ck_assert_int_eq(s.n_layers, 1);
    ck_assert_int_eq(s.layers[0].units, 7);
    ck_assert_int_eq(s.layers[0].activation, KFAC_ACT_TANH);
    ck_assert_int_eq(t.optimizer, KFAC_OPT_ADAM);
    ck_assert_float_eq_tol(t.optim.beta1, 0.8f, 1e-7f);
    ck_assert_float_eq_tol(t.optim.beta2, 0.99f, 1e-7f);
    ck_assert_float_eq_tol(t.optim.eps, 1e-6f, 1e-12f);
    ck_assert_float_eq_tol(t.optim.weight_decay, 0.0005f, 1e-9f);
    ck_assert(t.seed == UINT64_MAX);
}
END_TEST

/* Keys left out keep the values of the *_init functions. */
START_TEST(test_defaults)
{
    kfac_net_spec s, ds;
    kfac_train_params t, dt;
    kfac_net_spec_init(&ds);
    kfac_train_params_init(&dt);
    /* dirty the outputs so that "left alone" cannot pass */
    memset(&s, 0x5a, sizeof s);
    memset(&t, 0x5a, sizeof t);
    kfac_status st = parse("[dense]\nunits = 3\n[net]\ninputs = 5\n[dense]\nunits = 1\n"
                           "activation = linear\n",
                           &s, &t);
    ck_assert_msg(st == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(s.n_layers, 2);
    ck_assert_int_eq(s.layers[0].units, 3);
    ck_assert_int_eq(s.layers[0].activation, ds.layers[0].activation);
    ck_assert_int_eq(s.layers[1].activation, KFAC_ACT_LINEAR);
    ck_assert_int_eq(s.loss, ds.loss);
    ck_assert_int_eq(s.init, ds.init);
    ck_assert(s.init_sigma == ds.init_sigma);
    ck_assert_int_eq(s.sparse_count, ds.sparse_count);
    ck_assert_int_eq(t.optimizer, dt.optimizer);
    ck_assert(memcmp(&t.optim, &dt.optim, sizeof t.optim) == 0);
    ck_assert_int_eq(t.batch, dt.batch);
    ck_assert_int_eq(t.epochs, dt.epochs);
    ck_assert(t.seed == dt.seed);
}
END_TEST

/* Every name of every enum is accepted, so the parser and the name tables
 * cannot drift apart. */
START_TEST(test_all_enum_names)
{
    char text[512];
    kfac_net_spec s;
    kfac_train_params t;
    for (int i = 0; i < KFAC_ACT_COUNT; i++) {
        snprintf(text, sizeof text, "[net]\ninputs=2\nloss=squared\n[dense]\nunits=2\nactivation=%s\n",
                 kfac_activation_name((kfac_activation)i));
        ck_assert_msg(parse(text, &s, &t) == KFAC_OK, "%s", kfac_last_error());
        ck_assert_int_eq(s.layers[0].activation, i);
    }
    for (int i = 0; i < KFAC_LOSS_COUNT; i++) {
        snprintf(text, sizeof text, "[net]\ninputs=2\nloss=%s\n[dense]\nunits=2\nactivation=linear\n",
                 kfac_loss_name((kfac_loss)i));
        ck_assert_msg(parse(text, &s, &t) == KFAC_OK, "%s", kfac_last_error());
        ck_assert_int_eq(s.loss, i);
    }
    for (int i = 0; i < KFAC_INIT_COUNT; i++) {
        snprintf(text, sizeof text, "[net]\ninputs=2\ninit=%s\n[dense]\nunits=2\nactivation=linear\n",
                 kfac_init_name((kfac_init)i));
        ck_assert_msg(parse(text, &s, &t) == KFAC_OK, "%s", kfac_last_error());
        ck_assert_int_eq(s.init, i);
    }
    for (int i = 0; i < KFAC_OPT_COUNT; i++) {
        snprintf(text, sizeof text, NET_OK "[train]\noptimizer=%s\n",
                 kfac_optimizer_name((kfac_optimizer_kind)i));
        ck_assert_msg(parse(text, &s, &t) == KFAC_OK, "%s", kfac_last_error());
        ck_assert_int_eq(t.optimizer, i);
    }
}
END_TEST

/* The most layers allowed parse; one more is an error on its header line. */
START_TEST(test_max_layers)
{
    size_t cap = 64 + (KFAC_MAX_LAYERS + 1) * 32;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    size_t n = (size_t)snprintf(text, cap, "[net]\ninputs = 3\nloss = squared\n");
    for (int l = 0; l < KFAC_MAX_LAYERS; l++)
        n += (size_t)snprintf(text + n, cap - n, "[dense]\nunits = 3\n");
    kfac_net_spec s;
    kfac_train_params t;
    kfac_status st = parse(text, &s, &t);
    ck_assert_msg(st == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(s.n_layers, KFAC_MAX_LAYERS);

    snprintf(text + n, cap - n, "[dense]\nunits = 3\n");
    st = parse(text, &s, &t);
    ck_assert_int_eq(st, KFAC_ERR_PARSE);
    char want[64];
    /* 3 header lines, then two lines per layer */
    snprintf(want, sizeof want, "t.net:%d: more than %d", 3 + 2 * KFAC_MAX_LAYERS + 1,
             KFAC_MAX_LAYERS);
    ck_assert_msg(strstr(kfac_last_error(), want), "'%s' lacks '%s'", kfac_last_error(), want);
    free(text);
}
END_TEST

/* ----------------------------------------------------------- errors */

typedef struct bad_case {
    const char *text;
    const char *where;   /* "t.net:LINE:" or "t.net: " for whole-file errors */
    const char *problem; /* a word or phrase of the problem */
} bad_case;

static const bad_case bad[] = {
    /* line-level */
    {NET_OK "[conv2d]\n", "t.net:6:",
     "unknown section [conv2d] (net, dense, conv, pool, train, kfac, sgd, momentum, nesterov, adam)"},
    {NET_OK "[conv]\n", "t.net:6:", "[conv] without channels"},
    {"[net]\ninputs = 4\n[dense]\nsise = 3\n", "t.net:4:",
     "unknown key 'sise' in [dense] (units, activation)"},
    {"[net]\ninputs = 4\ninputs = 5\n[dense]\nunits = 2\nactivation = linear\n", "t.net:3:",
     "duplicated key 'inputs' in [net] (first at line 2)"},
    {"inputs = 4\n" NET_OK, "t.net:1:", "before any section"},
    {NET_OK "[train]\nlr 0.1\n", "t.net:7:", "key = value"},
    {NET_OK "[train]\n= 0.1\n", "t.net:7:", "missing key"},
    {"[net]\ninputs =   # nothing\n", "t.net:2:", "empty value for 'inputs'"},
    {"[net\ninputs = 4\n", "t.net:1:", "malformed section header"},
    {"[net] x\ninputs = 4\n", "t.net:1:", "malformed section header"},
    {NET_OK "[net]\n", "t.net:6:", "second [net] section (first at line 1)"},
    /* numbers */
    {"[net]\ninputs = 12abc\n", "t.net:2:", "integer, got '12abc'"},
    {"[net]\ninputs = 1 2\n", "t.net:2:", "integer"},
    {"[net]\ninputs = 0x10\n", "t.net:2:", "integer"},
    {"[net]\ninputs = 4.5\n", "t.net:2:", "integer"},
    {NET_OK "[train]\nlr = 0.1x\n", "t.net:7:", "number, got '0.1x'"},
    {NET_OK "[train]\nseed = -1\n", "t.net:7:", "non-negative integer"},
    {NET_OK "[train]\nseed = 18446744073709551616\n", "t.net:7:", "2^64"},
    /* ranges */
    {"[net]\ninputs = 0\n", "t.net:2:", "inputs = 0 is outside [1, 10000000]"},
    {"[net]\ninputs = 99999999999999999999999\n", "t.net:2:", "outside [1, 10000000]"},
    {"[net]\ninputs = 4\n[dense]\nunits = 1000001\n", "t.net:4:", "outside [1, 1000000]"},
    {"[net]\ninputs = 4\n[dense]\nunits = 0\n", "t.net:4:", "units = 0 is outside [1, 1000000]"},
    {"[net]\ninputs = 4\n[dense]\nunits = -3\n", "t.net:4:", "units = -3 is outside [1, 1000000]"},
    {"[net]\ninputs = -4\n", "t.net:2:", "inputs = -4 is outside [1, 10000000]"},
    {NET_OK "[kfac]\ndamping = -0.1\n", "t.net:7:", "damping = -0.1 is outside (0, 1000000]"},
    {NET_OK "[train]\nbatch = -1\n", "t.net:7:", "batch = -1 is outside [1, 1000000]"},
    /* every size in range, 10^12 parameters in all: refused by the spec's
     * parameter cap before any allocation */
    {"[net]\ninputs = 1000000\nloss = squared\n[dense]\nunits = 1000000\n", "t.net:4:",
     "layer 1 (dense): 1000001000000 parameters: more than 2^30"},
    {"[net]\ninputs = 4\nsparse_count = 0\n", "t.net:3:", "outside [1, 100000]"},
    {"[net]\ninputs = 4\ninit_sigma = 0\n", "t.net:3:", "outside (0, 100]"},
    {NET_OK "[train]\nlr = 0\n", "t.net:7:", "lr = 0 is outside (0, 1000]"},
    {NET_OK "[train]\nlr = 1000.5\n", "t.net:7:", "outside (0, 1000]"},
    {NET_OK "[train]\nlr = nan\n", "t.net:7:", "outside (0, 1000]"},
    {NET_OK "[train]\nmomentum = 1\n", "t.net:7:", "outside [0, 1)"},
    /* below 1 as a double, 1 once stored as a float */
    {NET_OK "[train]\nmomentum = 0.9999999999\n", "t.net:7:", "outside [0, 1)"},
    {NET_OK "[train]\nbeta1 = -0.1\n", "t.net:7:", "outside [0, 1)"},
    {NET_OK "[train]\nbeta2 = 1.5\n", "t.net:7:", "outside [0, 1)"},
    {NET_OK "[train]\neps = 0\n", "t.net:7:", "outside (0, 1]"},
    {NET_OK "[train]\nweight_decay = -1\n", "t.net:7:", "outside [0, 1000]"},
    {NET_OK "[train]\nbatch = 0\n", "t.net:7:", "outside [1, 1000000]"},
    {NET_OK "[train]\nepochs = 100001\n", "t.net:7:", "outside [1, 100000]"},
    /* enum names */
    {"[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = rleu\n", "t.net:5:",
     "unknown activation 'rleu' (linear, relu, tanh, sigmoid)"},
    {"[net]\ninputs = 4\nloss = hinge\n", "t.net:3:",
     "unknown loss 'hinge' (softmax_xent, sigmoid_xent, squared)"},
    {"[net]\ninputs = 4\ninit = Glorot\n", "t.net:3:", "unknown init 'Glorot'"},
    {NET_OK "[train]\noptimizer = lbfgs\n", "t.net:7:",
     "unknown optimizer 'lbfgs' (sgd, momentum, nesterov, adam, kfac)"},
    /* whole file */
    {"", "t.net: ", "no [net] section"},
    {"[dense]\nunits = 3\n", "t.net: ", "no [net] section"},
    {"[net]\ninputs = 4\n[train]\nlr = 0.1\n", "t.net: ", "no layer ([dense], [conv] or [pool] section)"},
    {"[net]\nloss = squared\n[dense]\nunits = 2\n", "t.net:1:", "[net] without inputs"},
    {"[net]\ninputs = 4\n\n[dense]\nactivation = linear\n[dense]\nunits = 2\n", "t.net:4:",
     "[dense] without units"},
    {"[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = linear\n[dense]\n", "t.net:6:",
     "[dense] without units"},
    /* rejected by kfac_net_spec_validate, at the layer's section: a
     * softmax loss needs a linear last layer */
    {"[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = relu\n", "t.net:3:", "linear"},
};

START_TEST(test_errors)
{
    const bad_case *c = &bad[_i];
    kfac_net_spec s;
    kfac_train_params t;
    kfac_status st = parse(c->text, &s, &t);
    const char *e = kfac_last_error();
    ck_assert_msg(st == KFAC_ERR_PARSE, "case %d: status %s (%s), want parse error", _i,
                  kfac_strerror(st), e);
    ck_assert_msg(strncmp(e, c->where, strlen(c->where)) == 0, "case %d: '%s' does not start '%s'",
                  _i, e, c->where);
    ck_assert_msg(strstr(e, c->problem), "case %d: '%s' lacks '%s'", _i, e, c->problem);
}
END_TEST

/* The exact wording promised in kfac.h. */
START_TEST(test_error_exact)
{
    kfac_net_spec s;
    kfac_train_params t;
    ck_assert_int_eq(kfac_netfile_parse("[net]\ninputs = 4\n[dense]\nsise = 3\n", "nets/x.net",
                                        &s, &t),
                     KFAC_ERR_PARSE);
    ck_assert_str_eq(kfac_last_error(),
                     "nets/x.net:4: unknown key 'sise' in [dense] (units, activation)");
}
END_TEST

START_TEST(test_null_args)
{
    kfac_net_spec s;
    kfac_train_params t;
    ck_assert_int_eq(kfac_netfile_parse(NULL, "t.net", &s, &t), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_netfile_parse(NET_OK, "t.net", NULL, &t), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_netfile_parse(NET_OK, "t.net", &s, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_netfile_load(NULL, &s, &t), KFAC_ERR_INVALID_ARG);
    /* a missing file name still yields a usable message */
    ck_assert_int_eq(kfac_netfile_parse("[oops]\n", NULL, &s, &t), KFAC_ERR_PARSE);
    ck_assert_msg(strstr(kfac_last_error(), ":1: unknown section"), "%s", kfac_last_error());
}
END_TEST

/* ---------------------------------------------------------- files */

START_TEST(test_missing_file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/no-such.net", test_tmpdir());
    kfac_net_spec s;
    kfac_train_params t;
    ck_assert_int_eq(kfac_netfile_load(path, &s, &t), KFAC_ERR_IO);
    ck_assert_msg(strncmp(kfac_last_error(), path, strlen(path)) == 0, "'%s' does not name %s",
                  kfac_last_error(), path);
    ck_assert_msg(strstr(kfac_last_error(), "No such file"), "%s", kfac_last_error());
}
END_TEST

START_TEST(test_directory)
{
    kfac_net_spec s;
    kfac_train_params t;
    ck_assert_int_eq(kfac_netfile_load(test_tmpdir(), &s, &t), KFAC_ERR_IO);
    ck_assert_msg(strstr(kfac_last_error(), test_tmpdir()), "%s", kfac_last_error());
}
END_TEST

/* Parse errors from a file carry its path. */
START_TEST(test_file_error_names_path)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bad.net", test_tmpdir());
    const char text[] = "[net]\ninputs = 784\n\n[dense]\nunits = 12abc\n";
    write_file(path, text, sizeof text - 1);
    kfac_net_spec s;
    kfac_train_params t;
    ck_assert_int_eq(kfac_netfile_load(path, &s, &t), KFAC_ERR_PARSE);
    char want[600];
    snprintf(want, sizeof want, "%s:5: units needs an integer", path);
    ck_assert_msg(strncmp(kfac_last_error(), want, strlen(want)) == 0, "'%s' is not '%s...'",
                  kfac_last_error(), want);
}
END_TEST

START_TEST(test_file_too_big)
{
    char path[512];
    snprintf(path, sizeof path, "%s/big.net", test_tmpdir());
    size_t n = (1u << 20) + 1;
    char *data = malloc(n);
    ck_assert_ptr_nonnull(data);
    memset(data, '#', n); /* one endless comment: valid text, just too long */
    write_file(path, data, n);
    kfac_net_spec s;
    kfac_train_params t;
    ck_assert_int_eq(kfac_netfile_load(path, &s, &t), KFAC_ERR_PARSE);
    ck_assert_msg(strstr(kfac_last_error(), "larger than"), "%s", kfac_last_error());

    /* exactly at the limit it is read (and then fails for want of [net]) */
    write_file(path, data, n - 1);
    ck_assert_int_eq(kfac_netfile_load(path, &s, &t), KFAC_ERR_PARSE);
    ck_assert_msg(strstr(kfac_last_error(), "no [net]"), "%s", kfac_last_error());
    free(data);
}
END_TEST

START_TEST(test_file_nul_byte)
{
    char path[512];
    snprintf(path, sizeof path, "%s/nul.net", test_tmpdir());
    const char text[] = NET_OK "\0[conv]\n";
    write_file(path, text, sizeof text - 1);
    kfac_net_spec s;
    kfac_train_params t;
    ck_assert_int_eq(kfac_netfile_load(path, &s, &t), KFAC_ERR_PARSE);
    ck_assert_msg(strstr(kfac_last_error(), "NUL"), "%s", kfac_last_error());
}
END_TEST

/* The parameter table (params.c) is the one source of every [train] and
 * [kfac] setting: each row reads from a net file under its key, is set and
 * read back by name, refuses a value that is not one, and is a flag of
 * `kfac train --help`. Names shared by two sections need theirs. */
START_TEST(test_parameter_table)
{
    int n = kfac_param_count();
    ck_assert_int_ge(n, 20);
    kfac_param_info in;
    ck_assert_int_eq(kfac_param_get_info(n, &in), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_param_get_info(-1, &in), KFAC_ERR_INVALID_ARG);
    char help[16384] = "";
    {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "%s train --help", test_kfac_bin());
        FILE *f = popen(cmd, "r");
        ck_assert_ptr_nonnull(f);
        size_t got = fread(help, 1, sizeof help - 1, f);
        help[got] = '\0';
        char rest[512]; /* drain: a full pipe would kill the program */
        while (fread(rest, 1, sizeof rest, f) > 0)
            continue;
        ck_assert_int_eq(pclose(f), 0);
    }
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(kfac_param_get_info(i, &in), KFAC_OK);
        char name[64], text[256], got[64], want[64];
        snprintf(name, sizeof name, "%s.%s", in.section, in.key);
        /* the default, as the net file writes it, reads back the same */
        snprintf(text, sizeof text, "[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = linear\n[%s]\n%s = %s\n",
                 in.section, in.key, in.def);
        kfac_net_spec spec;
        kfac_train_params from_file, by_name, defaults;
        ck_assert_msg(kfac_netfile_parse(text, "t.net", &spec, &from_file) == KFAC_OK, "%s: %s", name,
                      kfac_last_error());
        kfac_train_params_init(&defaults);
        kfac_train_params_init(&by_name);
        ck_assert_int_eq(kfac_train_params_get(&from_file, name, got, sizeof got), KFAC_OK);
        ck_assert_int_eq(kfac_train_params_get(&defaults, name, want, sizeof want), KFAC_OK);
        ck_assert_msg(!strcmp(got, want), "%s: %s from the file, default %s", name, got, want);
        ck_assert_int_eq(kfac_train_params_set(&by_name, name, got), KFAC_OK);
        ck_assert_msg(!memcmp(&by_name, &defaults, sizeof by_name), "%s: set %s changed the struct", name, got);
        /* not a value of any type; the struct is left alone */
        ck_assert_int_eq(kfac_train_params_set(&by_name, name, "nonsense"), KFAC_ERR_INVALID_ARG);
        ck_assert_msg(strstr(kfac_last_error(), "nonsense"), "%s: %s", name, kfac_last_error());
        ck_assert_msg(!memcmp(&by_name, &defaults, sizeof by_name), "%s: a refused value changed it", name);
        ck_assert_msg(strstr(help, in.flag), "train --help lacks %s", in.flag);
        ck_assert_msg(in.doc && *in.doc && in.range[0], "%s: no documentation", name);
    }
    /* a value inside the range changes exactly its field */
    kfac_train_params a, b;
    kfac_train_params_init(&a);
    kfac_train_params_init(&b);
    ck_assert_int_eq(kfac_train_params_set(&a, "damping", "0.03"), KFAC_OK);
    ck_assert(a.kfac.damping == 0.03f);
    b.kfac.damping = 0.03f;
    ck_assert(!memcmp(&a, &b, sizeof a));
    ck_assert_int_eq(kfac_train_params_set(&a, "kfac.lr", "0.2"), KFAC_OK);
    ck_assert(a.kfac.lr == 0.2f && a.optim.lr == b.optim.lr);
    ck_assert_int_eq(kfac_train_params_set(&a, "optimizer", "adam"), KFAC_OK);
    ck_assert_int_eq(a.optimizer, KFAC_OPT_ADAM);
    /* lr is in [train] and [kfac]: the bare key is refused, naming both */
    ck_assert_int_eq(kfac_train_params_set(&a, "lr", "0.1"), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "train.lr or kfac.lr"));
    ck_assert_int_eq(kfac_train_params_set(&a, "no_such", "1"), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_train_params_set(&a, "kfac.batch", "1"), KFAC_ERR_INVALID_ARG);
    /* range ends, as the table says */
    ck_assert_int_eq(kfac_train_params_set(&a, "kfac.damping", "0"), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "damping = 0 is outside (0, 1000000]"));
    ck_assert_int_eq(kfac_train_params_set(&a, "batch", "1000001"), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_train_params_set(&a, "seed", "-1"), KFAC_ERR_INVALID_ARG);
    /* the validation reads the same table */
    a.kfac.rank_max = 0;
    ck_assert_int_eq(kfac_train_params_validate(&a), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "rank_max = 0 is outside [1, 4096]"));
}
END_TEST

/* [sgd], [momentum], [nesterov] and [adam]: each optimizer's own
 * settings, the [train] keys of the first-order optimizers, NaN where they
 * inherit; kfac_train_params_resolve gives what a run uses. */
START_TEST(test_optimizer_sections)
{
    kfac_net_spec spec;
    kfac_train_params t;
    const char *text = NET_OK "[train]\nlr = 0.05\n[adam]\nlr = 0.001\neps = 1e-6\n[kfac]\nlr = 0.03\n";
    ck_assert_msg(kfac_netfile_parse(text, "t.net", &spec, &t) == KFAC_OK, "%s", kfac_last_error());
    ck_assert(t.per_optimizer[KFAC_OPT_ADAM].lr == 0.001f && t.per_optimizer[KFAC_OPT_ADAM].eps == 1e-6f);
    ck_assert(isnan(t.per_optimizer[KFAC_OPT_ADAM].beta1) && isnan(t.per_optimizer[KFAC_OPT_SGD].lr));
    kfac_optim_params op;
    t.optimizer = KFAC_OPT_ADAM;
    kfac_train_params_resolve(&t, &op);
    ck_assert(op.lr == 0.001f && op.eps == 1e-6f && op.beta1 == t.optim.beta1);
    t.optimizer = KFAC_OPT_MOMENTUM;
    kfac_train_params_resolve(&t, &op);
    ck_assert(!memcmp(&op, &t.optim, sizeof op)); /* no section: [train]'s */
    t.optimizer = KFAC_OPT_KFAC;
    kfac_train_params_resolve(&t, &op);
    ck_assert(op.lr == 0.03f && op.momentum == t.optim.momentum);
    /* by name, back to inherit, and the validation of what is set */
    char buf[32];
    ck_assert_int_eq(kfac_train_params_get(&t, "adam.lr", buf, sizeof buf), KFAC_OK);
    ck_assert_str_eq(buf, "0.00100000005");
    ck_assert_int_eq(kfac_train_params_set(&t, "adam.lr", "inherit"), KFAC_OK);
    ck_assert_int_eq(kfac_train_params_get(&t, "adam.lr", buf, sizeof buf), KFAC_OK);
    ck_assert_str_eq(buf, "inherit");
    ck_assert_int_eq(kfac_train_params_set(&t, "kfac.lr", "inherit"), KFAC_ERR_INVALID_ARG);
    t.per_optimizer[KFAC_OPT_NESTEROV].momentum = 1.0f;
    ck_assert_int_eq(kfac_train_params_validate(&t), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "nesterov.momentum = 1 is outside [0, 1)"));
    /* the sections take the optimizers' keys only, once */
    ck_assert_int_eq(kfac_netfile_parse(NET_OK "[adam]\ndamping = 1\n", "t.net", &spec, &t), KFAC_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(),
                                 "t.net:7: unknown key 'damping' in [adam] (lr, momentum, beta1, beta2, eps, weight_decay)"));
    ck_assert_int_eq(kfac_netfile_parse(NET_OK "[sgd]\nlr = 0\n", "t.net", &spec, &t), KFAC_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "t.net:7: lr = 0 is outside (0, 1000]"));
    ck_assert_int_eq(kfac_netfile_parse(NET_OK "[sgd]\nlr = 0.1\n[sgd]\nlr = 0.2\n", "t.net", &spec, &t),
                     KFAC_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "second [sgd] section"));
}
END_TEST

/* A UTF-8 byte-order mark, which some editors write, is accepted */
START_TEST(test_byte_order_mark)
{
    kfac_net_spec spec;
    kfac_train_params t;
    ck_assert_msg(kfac_netfile_parse("\xEF\xBB\xBF" NET_OK, "t.net", &spec, &t) == KFAC_OK, "%s",
                  kfac_last_error());
    ck_assert_int_eq(spec.inputs, 4);
    /* only at the start: elsewhere it is a stray byte */
    ck_assert_int_eq(kfac_netfile_parse(NET_OK "\xEF\xBB\xBF[train]\n", "t.net", &spec, &t), KFAC_ERR_PARSE);
}
END_TEST

Suite *netfile_suite(void)
{
    Suite *s = suite_create("netfile");
    TCase *tc = tcase_create("shipped");
    tcase_add_test(tc, test_fmnist_mlp);
    tcase_add_test(tc, test_tiny_and_kfac_sections);
    tcase_add_test(tc, test_mnist_autoencoder);
    tcase_add_test(tc, test_small);
    suite_add_tcase(s, tc);

    tc = tcase_create("syntax");
    tcase_add_test(tc, test_comments_and_spacing);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_all_enum_names);
    tcase_add_test(tc, test_max_layers);
    tcase_add_test(tc, test_parameter_table);
    tcase_add_test(tc, test_optimizer_sections);
    tcase_add_test(tc, test_byte_order_mark);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof bad / sizeof *bad));
    tcase_add_test(tc, test_error_exact);
    tcase_add_test(tc, test_null_args);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_directory);
    tcase_add_test(tc, test_file_error_names_path);
    tcase_add_test(tc, test_file_too_big);
    tcase_add_test(tc, test_file_nul_byte);
    suite_add_tcase(s, tc);
    return s;
}
