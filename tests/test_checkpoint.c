/* test_checkpoint.c - checkpoints: resuming gives bit-identical parameters
 * to an uninterrupted run for first-order optimizers and K-FAC; every kind
 * of damaged or mismatched file is refused with its own message naming the
 * file and leaves the trainer as it was; saves are atomic and leave no
 * temporary files. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "kfac.h"
#include "tests.h"

/* -------------------------------------------------------------- helpers */

static char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void write_all(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert(f && fwrite(buf, 1, n, f) == n);
    fclose(f);
}

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", test_tmpdir(), name);
}

/* A learnable synthetic set in memory: n examples of 12 features, 3
 * classes, each class lighting one third of the features. */
static kfac_dataset synthetic(int n, uint64_t seed)
{
    kfac_dataset d = {0};
    d.n = n;
    d.features = 12;
    d.rows = 3;
    d.cols = 4;
    d.classes = 3;
    d.x = malloc(sizeof(float) * (size_t)n * 12);
    d.labels = malloc((size_t)n);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int c = (int)kfac_rng_below(&r, 3);
        d.labels[i] = (uint8_t)c;
        for (int k = 0; k < 12; k++)
            d.x[i * 12 + k] = (float)kfac_rng_uniform(&r) * 0.5f + (k / 4 == c ? 0.5f : 0.0f);
    }
    return d;
}

static void free_synthetic(kfac_dataset *d)
{
    free(d->x);
    free(d->labels);
}

/* 12-16-3 tanh classifier; `hidden` changes the network */
static void spec_of(kfac_net_spec *s, int hidden)
{
    kfac_net_spec_init(s);
    s->inputs = 12;
    s->n_layers = 2;
    s->layers[0] = (kfac_layer_spec){.units = hidden, .activation = KFAC_ACT_TANH};
    s->layers[1] = (kfac_layer_spec){.units = 3, .activation = KFAC_ACT_LINEAR};
}

typedef struct config {
    const char *name;
    kfac_optimizer_kind opt;
    kfac_step_rule rule;
    kfac_inversion inv;
    kfac_lr_schedule schedule; /* with a warm-up of half an epoch */
} config;

static const config configs[] = {
    {"momentum", KFAC_OPT_MOMENTUM, KFAC_RULE_KL_CLIP, KFAC_INV_CHOLESKY, KFAC_LR_CONSTANT},
    {"adam", KFAC_OPT_ADAM, KFAC_RULE_KL_CLIP, KFAC_INV_CHOLESKY, KFAC_LR_CONSTANT},
    {"kfac", KFAC_OPT_KFAC, KFAC_RULE_KL_CLIP, KFAC_INV_CHOLESKY, KFAC_LR_CONSTANT},
    {"kfac quadratic eigen", KFAC_OPT_KFAC, KFAC_RULE_QUADRATIC, KFAC_INV_EIGEN, KFAC_LR_CONSTANT},
    {"kfac lowrank", KFAC_OPT_KFAC, KFAC_RULE_KL_CLIP, KFAC_INV_LOWRANK, KFAC_LR_CONSTANT},
    {"kfac ekfac", KFAC_OPT_KFAC, KFAC_RULE_KL_CLIP, KFAC_INV_EKFAC, KFAC_LR_CONSTANT},
    {"kfac tridiag", KFAC_OPT_KFAC, KFAC_RULE_KL_CLIP, KFAC_INV_TRIDIAG, KFAC_LR_CONSTANT},
    /* schedules read the steps taken, which the checkpoint holds */
    {"momentum, cosine schedule", KFAC_OPT_MOMENTUM, KFAC_RULE_KL_CLIP, KFAC_INV_CHOLESKY, KFAC_LR_COSINE},
    {"kfac, step schedule", KFAC_OPT_KFAC, KFAC_RULE_KL_CLIP, KFAC_INV_LOWRANK, KFAC_LR_STEP},
};

static void params_of(kfac_train_params *p, const config *c)
{
    kfac_train_params_init(p);
    p->optimizer = c->opt;
    p->optim.lr = c->opt == KFAC_OPT_ADAM ? 0.01f : 0.05f;
    p->batch = 32;
    p->seed = 5;
    /* statistics and inversions straddle the epoch boundary (19 steps an
     * epoch), so saved factors and inverses are used after the resume */
    p->kfac.cov_every = 3;
    p->kfac.inv_every = 7;
    p->kfac.rule = c->rule;
    p->kfac.inversion = c->inv;
    p->kfac.damping = c->rule == KFAC_RULE_QUADRATIC ? 1.0f : 0.1f;
    p->kfac.lm_every = 2;
    /* 2 (4 + 8) <= 50: tiny.net's first A is a low-rank inverse, whose
     * basis, rank and constant the checkpoint must carry */
    p->kfac.rank_max = 4;
    p->lr_schedule = c->schedule;
    if (c->schedule != KFAC_LR_CONSTANT) {
        p->warmup_epochs = 0.5f;
        p->lr_step_epochs = 1;
        p->epochs = 3;
    }
}

static kfac_trainer *new_trainer(const kfac_net_spec *s, const kfac_train_params *p, const kfac_dataset *d)
{
    kfac_trainer *t = NULL;
    ck_assert_msg(kfac_trainer_new(s, p, d, &t) == KFAC_OK, "%s", kfac_last_error());
    return t;
}

static void epoch(kfac_trainer *t)
{
    ck_assert_msg(kfac_trainer_epoch(t, NULL, NULL, NULL) == KFAC_OK, "%s", kfac_last_error());
}

/* ---------------------------------------------------------------- tests */

/* 2 epochs straight == 1 epoch, save, load into a fresh trainer, 1 epoch:
 * the same bits, for each optimizer. A third epoch after each checks the
 * generator and the data order came back too. */
START_TEST(test_resume_is_bit_identical)
{
    const config *c = &configs[_i];
    kfac_set_threads(2);
    kfac_dataset d = synthetic(600, 1);
    kfac_net_spec s;
    kfac_train_params p;
    spec_of(&s, 16);
    params_of(&p, c);
    char path[512];
    tmp_path(path, sizeof path, "resume.ckpt");

    kfac_trainer *straight = new_trainer(&s, &p, &d);
    epoch(straight);
    epoch(straight);

    kfac_trainer *first = new_trainer(&s, &p, &d);
    epoch(first);
    ck_assert_msg(kfac_trainer_save(first, path) == KFAC_OK, "%s", kfac_last_error());
    kfac_trainer_free(first);
    kfac_trainer *resumed = new_trainer(&s, &p, &d);
    ck_assert_msg(kfac_trainer_load(resumed, path) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_trainer_epochs_done(resumed), 1);
    epoch(resumed);
    ck_assert_int_eq(kfac_trainer_epochs_done(resumed), 2);

    for (int round = 0; round < 2; round++) {
        kfac_net *a = kfac_trainer_net(straight), *b = kfac_trainer_net(resumed);
        size_t n = kfac_net_n_params(a);
        ck_assert_msg(memcmp(kfac_net_params(a), kfac_net_params(b), n * sizeof(float)) == 0,
                      "%s: parameters differ after %d epochs", c->name, 2 + round);
        if (c->opt == KFAC_OPT_KFAC) {
            kfac_kfac_stats ka, kb;
            ck_assert_int_eq(kfac_trainer_kfac_stats(straight, &ka), KFAC_OK);
            ck_assert_int_eq(kfac_trainer_kfac_stats(resumed, &kb), KFAC_OK);
            ck_assert_int_eq(ka.stats_rounds, kb.stats_rounds);
            ck_assert_int_eq(ka.inversions, kb.inversions);
            ck_assert(ka.damping == kb.damping);
        }
        epoch(straight);
        epoch(resumed);
    }
    kfac_trainer_free(straight);
    kfac_trainer_free(resumed);
    free_synthetic(&d);
}
END_TEST

/* A progress callback that stops the epoch after step `at`. */
typedef struct stopper {
    long at, last;
    kfac_trainer *t;
    double mean_loss; /* kfac_trainer_position's, read at the stop */
} stopper;

static int stop_at(void *user, long step, long steps)
{
    stopper *s = user;
    (void)steps;
    s->last = step;
    kfac_epoch_position pos;
    ck_assert_int_eq(kfac_trainer_position(s->t, &pos), KFAC_OK);
    s->mean_loss = pos.mean_loss;
    return step == s->at;
}

/* An epoch a progress callback stops (as `kfac train` does on SIGINT)
 * stays unfinished: not counted, its position saved (format version 2),
 * and finished after the load with the same batches: the parameters and
 * the epoch's mean loss are the same bits as straight through, for each
 * optimizer. An epoch stopped at its last step is a whole one (version 1). */
START_TEST(test_stopped_epoch_resumes)
{
    const config *c = &configs[_i];
    kfac_set_threads(2);
    kfac_dataset d = synthetic(600, 1);
    kfac_net_spec s;
    kfac_train_params p;
    spec_of(&s, 16);
    params_of(&p, c);
    char path[512];
    tmp_path(path, sizeof path, "stopped.ckpt");

    kfac_trainer *straight = new_trainer(&s, &p, &d);
    kfac_epoch_stats want, got;
    epoch(straight);
    ck_assert_int_eq(kfac_trainer_epoch(straight, NULL, NULL, &want), KFAC_OK);

    kfac_trainer *first = new_trainer(&s, &p, &d);
    epoch(first);
    stopper st = {7, 0, first, 0.0};
    ck_assert_int_eq(kfac_trainer_epoch(first, stop_at, &st, &got), KFAC_OK);
    ck_assert_int_eq(st.last, 7); /* stopped right there */
    ck_assert_int_eq(kfac_trainer_epochs_done(first), 1);
    ck_assert_int_eq(got.epoch, 2);
    kfac_epoch_position pos;
    ck_assert_int_eq(kfac_trainer_position(first, &pos), KFAC_OK);
    ck_assert_int_eq(pos.epoch, 2);
    ck_assert_int_eq(pos.examples, 7 * 32);
    ck_assert_int_eq(pos.total, 600);
    ck_assert(pos.mean_loss == got.train_loss && pos.mean_loss == st.mean_loss && isfinite(pos.mean_loss));
    ck_assert_msg(kfac_trainer_save(first, path) == KFAC_OK, "%s", kfac_last_error());
    size_t n;
    char *buf = read_all(path, &n);
    ck_assert_int_eq((unsigned char)buf[8], 2); /* the position needs version 2 */
    free(buf);
    kfac_trainer_free(first);

    kfac_trainer *resumed = new_trainer(&s, &p, &d);
    ck_assert_msg(kfac_trainer_load(resumed, path) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_trainer_epochs_done(resumed), 1);
    ck_assert_int_eq(kfac_trainer_position(resumed, &pos), KFAC_OK);
    ck_assert_int_eq(pos.examples, 7 * 32);
    stopper count = {-1, 0, resumed, 0.0};
    ck_assert_int_eq(kfac_trainer_epoch(resumed, stop_at, &count, &got), KFAC_OK);
    ck_assert_int_eq(count.last, 19); /* steps 8..19 of 19 */
    ck_assert_int_eq(kfac_trainer_epochs_done(resumed), 2);
    ck_assert_int_eq(got.epoch, 2);
    ck_assert_msg(got.train_loss == want.train_loss, "%s: epoch 2's loss %.17g, straight %.17g", c->name,
                  got.train_loss, want.train_loss);
    size_t np = kfac_net_n_params(kfac_trainer_net(straight));
    ck_assert_msg(memcmp(kfac_net_params(kfac_trainer_net(straight)), kfac_net_params(kfac_trainer_net(resumed)),
                         np * sizeof(float)) == 0,
                  "%s: parameters differ after the stopped epoch", c->name);
    /* stopped at the last step: a whole epoch, at a boundary */
    stopper last = {19, 0, resumed, 0.0};
    ck_assert_int_eq(kfac_trainer_epoch(resumed, stop_at, &last, NULL), KFAC_OK);
    epoch(straight);
    ck_assert_int_eq(kfac_trainer_epochs_done(resumed), 3);
    ck_assert_int_eq(kfac_trainer_position(resumed, &pos), KFAC_OK);
    ck_assert_int_eq(pos.examples, 0);
    ck_assert(isnan(pos.mean_loss));
    ck_assert_msg(kfac_trainer_save(resumed, path) == KFAC_OK, "%s", kfac_last_error());
    buf = read_all(path, &n);
    ck_assert_int_eq((unsigned char)buf[8], 1);
    free(buf);
    ck_assert(memcmp(kfac_net_params(kfac_trainer_net(straight)), kfac_net_params(kfac_trainer_net(resumed)),
                     np * sizeof(float)) == 0);
    kfac_trainer_free(straight);
    kfac_trainer_free(resumed);
    free_synthetic(&d);
}
END_TEST

/* Load `path` into t; expect status st, a message naming the file and
 * containing `what`, and t's parameters untouched. */
static void expect_refused(kfac_trainer *t, const char *path, kfac_status st, const char *what)
{
    kfac_net *net = kfac_trainer_net(t);
    size_t n = kfac_net_n_params(net);
    float *before = malloc(n * sizeof(float));
    memcpy(before, kfac_net_params(net), n * sizeof(float));
    int epochs = kfac_trainer_epochs_done(t);
    kfac_status got = kfac_trainer_load(t, path);
    const char *msg = kfac_last_error();
    ck_assert_msg(got == st, "%s: status %s, expected %s (%s)", what, kfac_strerror(got), kfac_strerror(st), msg);
    ck_assert_msg(strstr(msg, path) != NULL, "message does not name the file: %s", msg);
    ck_assert_msg(strstr(msg, what) != NULL, "message lacks '%s': %s", what, msg);
    ck_assert_msg(memcmp(before, kfac_net_params(net), n * sizeof(float)) == 0, "%s: the trainer changed", what);
    ck_assert_int_eq(kfac_trainer_epochs_done(t), epochs);
    free(before);
}

/* Fix the trailing crc32 after an edit, so the edit itself is what the
 * loader meets. */
static void fix_crc(char *buf, size_t n)
{
    uint32_t c = (uint32_t)crc32(0L, (const unsigned char *)buf, (uInt)(n - 4));
    for (int i = 0; i < 4; i++)
        buf[n - 4 + i] = (char)(c >> (8 * i));
}

START_TEST(test_damaged_files_are_refused)
{
    kfac_set_threads(1);
    kfac_dataset d = synthetic(100, 2);
    kfac_net_spec s;
    kfac_train_params p;
    spec_of(&s, 16);
    params_of(&p, &configs[2]);
    kfac_trainer *t = new_trainer(&s, &p, &d);
    epoch(t);
    char good[512], bad[512];
    tmp_path(good, sizeof good, "good.ckpt");
    tmp_path(bad, sizeof bad, "bad.ckpt");
    ck_assert_msg(kfac_trainer_save(t, good) == KFAC_OK, "%s", kfac_last_error());
    size_t n;
    char *buf = read_all(good, &n);
    char *copy = malloc(n + 16);
    ck_assert(n > 100);
    /* the file is laid out as documented */
    ck_assert(memcmp(buf, "KFACCKPT", 8) == 0);
    ck_assert_int_eq((unsigned char)buf[8], 1); /* version 1, little-endian */
    ck_assert_int_eq(buf[9] | buf[10] | buf[11], 0);

    kfac_trainer *fresh = new_trainer(&s, &p, &d);

    tmp_path(bad, sizeof bad, "missing.ckpt");
    expect_refused(fresh, bad, KFAC_ERR_IO, "cannot open");
    tmp_path(bad, sizeof bad, "bad.ckpt");

    write_all(bad, buf, n / 2);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "truncated");
    write_all(bad, buf, 6);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "truncated");
    write_all(bad, "", 0);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "not a libkfac checkpoint");

    memcpy(copy, buf, n);
    copy[n / 2] ^= 0x10; /* one bit in the middle */
    write_all(bad, copy, n);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "checksum mismatch");

    memcpy(copy, buf, n);
    copy[n - 1] ^= 0x01; /* the checksum itself */
    write_all(bad, copy, n);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "checksum mismatch");

    memcpy(copy, buf, n);
    copy[8] = 4;
    write_all(bad, copy, n);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "version 4; this library reads versions 1 to 3");

    memcpy(copy, buf, n);
    copy[0] = 'X';
    write_all(bad, copy, n);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "no KFACCKPT magic");

    memcpy(copy, buf, n);
    memcpy(copy + n, "junk", 4);
    write_all(bad, copy, n + 4);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "after its end");

    /* exact count of trailing bytes */
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), ": 4 bytes after its end"));

    /* a header promising 2^62 bytes more: truncated, found without
     * reading or allocating anything of that size */
    memcpy(copy, buf, n);
    copy[16 + 7] = 0x40;
    write_all(bad, copy, n);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "truncated checkpoint");

    /* a path to something else: an endless device is refused at its first
     * bytes (it used to be read until memory ran out), a directory says so */
    expect_refused(fresh, "/dev/zero", KFAC_ERR_FORMAT, "no KFACCKPT magic");
    expect_refused(fresh, test_tmpdir(), KFAC_ERR_IO, "Is a directory");

    /* a consistent file whose data order is not a permutation: caught by
     * the dry run, before theta (which comes first) is touched */
    memcpy(copy, buf, n);
    copy[n - 5] = (char)0xff; /* the last order entry's high byte */
    fix_crc(copy, n);
    write_all(bad, copy, n);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "data order entry");
    /* every entry in range, but not each once: all zeros (100 examples,
     * the order's 400 bytes end just before the crc) */
    memcpy(copy, buf, n);
    memset(copy + n - 4 - 400, 0, 400);
    fix_crc(copy, n);
    write_all(bad, copy, n);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "data order entry 1 repeats 0: not a permutation");
    /* and one entry copied over another */
    memcpy(copy, buf, n);
    memcpy(copy + n - 8, copy + n - 4 - 400, 4);
    fix_crc(copy, n);
    write_all(bad, copy, n);
    expect_refused(fresh, bad, KFAC_ERR_FORMAT, "not a permutation");

    /* good files for something else */
    kfac_net_spec other;
    spec_of(&other, 17);
    kfac_trainer *t17 = new_trainer(&other, &p, &d);
    expect_refused(t17, good, KFAC_ERR_SHAPE, "another network");
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "12-16:tanh-3:linear softmax_xent loss"));
    kfac_trainer_free(t17);

    kfac_train_params pm = p;
    pm.optimizer = KFAC_OPT_MOMENTUM;
    kfac_trainer *tm = new_trainer(&s, &pm, &d);
    expect_refused(tm, good, KFAC_ERR_SHAPE, "optimizer kfac");
    kfac_trainer_free(tm);

    kfac_train_params pe = p;
    pe.kfac.inversion = KFAC_INV_EIGEN;
    kfac_trainer *te = new_trainer(&s, &pe, &d);
    expect_refused(te, good, KFAC_ERR_SHAPE, "inversion");
    kfac_trainer_free(te);

    kfac_dataset d2 = synthetic(90, 2);
    kfac_trainer *t2 = new_trainer(&s, &p, &d2);
    expect_refused(t2, good, KFAC_ERR_SHAPE, "training-set size");
    kfac_trainer_free(t2);
    free_synthetic(&d2);

    int din = 4, dout = 2;
    kfac_precond *pc;
    ck_assert_int_eq(kfac_precond_new(1, &din, &dout, 8, NULL, NULL, &pc), KFAC_OK);
    ck_assert_int_eq(kfac_precond_save(pc, bad), KFAC_OK);
    expect_refused(fresh, bad, KFAC_ERR_SHAPE, "a preconditioner checkpoint");
    kfac_precond_free(pc);

    /* and the good one still loads */
    ck_assert_msg(kfac_trainer_load(fresh, good) == KFAC_OK, "%s", kfac_last_error());
    ck_assert_int_eq(kfac_trainer_epochs_done(fresh), 1);
    ck_assert(memcmp(kfac_net_params(kfac_trainer_net(fresh)), kfac_net_params(kfac_trainer_net(t)),
                     kfac_net_n_params(kfac_trainer_net(t)) * sizeof(float)) == 0);

    /* only theta, into a bare network */
    kfac_net *net;
    ck_assert_int_eq(kfac_net_new(&s, 4, &net), KFAC_OK);
    ck_assert_msg(kfac_net_load_checkpoint(net, good) == KFAC_OK, "%s", kfac_last_error());
    ck_assert(memcmp(kfac_net_params(net), kfac_net_params(kfac_trainer_net(t)),
                     kfac_net_n_params(net) * sizeof(float)) == 0);
    write_all(bad, buf, n / 2);
    ck_assert_int_eq(kfac_net_load_checkpoint(net, bad), KFAC_ERR_FORMAT);
    kfac_net_free(net);
    ck_assert_int_eq(kfac_net_new(&other, 4, &net), KFAC_OK);
    ck_assert_int_eq(kfac_net_load_checkpoint(net, good), KFAC_ERR_SHAPE);
    kfac_net_free(net);

    free(buf);
    free(copy);
    kfac_trainer_free(fresh);
    kfac_trainer_free(t);
    free_synthetic(&d);
}
END_TEST

/* A stopped epoch's position outside the data set: refused by the dry
 * run, before theta is touched. The dry run used to range-check the
 * trainer's own position instead of the file's, so the load failed only
 * half-way, the weights and optimizer state already overwritten (found by
 * fuzz_checkpoint on a CNN checkpoint; regressions/checkpoint/). */
START_TEST(test_position_out_of_range_is_refused)
{
    kfac_set_threads(1);
    kfac_dataset d = synthetic(100, 2);
    kfac_net_spec s;
    kfac_train_params p;
    spec_of(&s, 16);
    params_of(&p, &configs[2]);
    kfac_trainer *t = new_trainer(&s, &p, &d);
    stopper st = {1, 0, t, 0.0};
    ck_assert_int_eq(kfac_trainer_epoch(t, stop_at, &st, NULL), KFAC_OK);
    char path[512], bad[512];
    tmp_path(path, sizeof path, "position.ckpt");
    tmp_path(bad, sizeof bad, "position-bad.ckpt");
    ck_assert_msg(kfac_trainer_save(t, path) == KFAC_OK, "%s", kfac_last_error());
    size_t n;
    char *buf = read_all(path, &n);
    ck_assert_int_eq((unsigned char)buf[8], 2);
    /* the end: [examples done, i64][their loss sum, f64][crc32] */
    size_t at = n - 4 - 8 - 8;
    ck_assert_int_eq((unsigned char)buf[at], 32); /* one batch done */
    kfac_trainer *fresh = new_trainer(&s, &p, &d);
    static const int64_t bad_values[] = {100, -1, 512, (int64_t)1 << 40};
    for (size_t k = 0; k < sizeof bad_values / sizeof *bad_values; k++) {
        for (int i = 0; i < 8; i++)
            buf[at + i] = (char)((uint64_t)bad_values[k] >> (8 * i));
        fix_crc(buf, n);
        write_all(bad, buf, n);
        expect_refused(fresh, bad, KFAC_ERR_FORMAT, "the examples done in the epoch of");
    }
    ck_assert_msg(kfac_trainer_load(fresh, path) == KFAC_OK, "%s", kfac_last_error());
    free(buf);
    kfac_trainer_free(fresh);
    kfac_trainer_free(t);
    free_synthetic(&d);
}
END_TEST

static int count_tmp_files(const char *dir)
{
    DIR *dp = opendir(dir);
    ck_assert(dp != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(dp));)
        n += strstr(e->d_name, ".tmp") != NULL;
    closedir(dp);
    return n;
}

/* A save replaces the old file whole, leaves no temporary behind, and a
 * save that cannot be written fails with the path, the old file intact. */
START_TEST(test_save_is_atomic)
{
    kfac_set_threads(1);
    kfac_dataset d = synthetic(100, 3);
    kfac_net_spec s;
    kfac_train_params p;
    spec_of(&s, 16);
    params_of(&p, &configs[0]);
    kfac_trainer *t = new_trainer(&s, &p, &d);
    char dir[512], path[600];
    tmp_path(dir, sizeof dir, "atomic");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(path, sizeof path, "%s/model.ckpt", dir);
    ck_assert_int_eq(kfac_trainer_save(t, path), KFAC_OK);
    size_t n1, n2;
    free(read_all(path, &n1));
    epoch(t);
    ck_assert_int_eq(kfac_trainer_save(t, path), KFAC_OK); /* over the old one */
    char *second = read_all(path, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_int_eq(count_tmp_files(dir), 0);

    char nowhere[700];
    snprintf(nowhere, sizeof nowhere, "%s/no/such/dir/model.ckpt", dir);
    ck_assert_int_eq(kfac_trainer_save(t, nowhere), KFAC_ERR_IO);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), nowhere));
    /* a directory where the file should go: the rename fails, the
     * temporary goes */
    char isdir[700];
    snprintf(isdir, sizeof isdir, "%s/sub", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/sub/x'", dir);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(kfac_trainer_save(t, isdir), KFAC_ERR_IO);
    ck_assert_int_eq(count_tmp_files(dir), 0);
    size_t n3;
    char *still = read_all(path, &n3);
    ck_assert(n3 == n2 && memcmp(still, second, n2) == 0);
    free(still);
    free(second);
    kfac_trainer_free(t);
    free_synthetic(&d);
}
END_TEST

Suite *checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_resume_is_bit_identical, 0, (int)(sizeof configs / sizeof *configs));
    tcase_add_loop_test(tc, test_stopped_epoch_resumes, 0, (int)(sizeof configs / sizeof *configs));
    tcase_add_test(tc, test_damaged_files_are_refused);
    tcase_add_test(tc, test_position_out_of_range_is_refused);
    tcase_add_test(tc, test_save_is_atomic);
    suite_add_tcase(s, tc);
    return s;
}
