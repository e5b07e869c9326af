/* train.c - the trainer: shuffled minibatches from a dataset, forward,
 * backward, optimizer step, timing; and evaluation on a dataset. All
 * buffers are allocated by kfac_trainer_new: an epoch allocates nothing.
 * In a process group (kfac_trainer_set_mpi_comm) every rank holds the
 * same state and takes its slice of each batch; the gradients (here) and
 * K-FAC's statistics (precond.c) are averaged over the group. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckio.h"
#include "common.h"
#include "dist.h"
#include "net.h"
#include "optim.h"
#include "params.h"
#include "train.h"

struct kfac_trainer {
    kfac_train_params p;
    const kfac_dataset *train; /* the caller's, or pooled, or split_train */
    kfac_dataset pooled;       /* the caller's pooled for the net's `pool`, owned */
    kfac_dataset split_train;  /* val_fraction > 0: views of the first rows */
    kfac_dataset val;          /* and of the last (n 0: no validation) */
    double best_val;           /* the lowest validation loss so far */
    int best_epoch, stale;     /* its epoch; epochs since */
    kfac_net *net;
    kfac_optimizer *opt;
    kfac_rng rng;     /* data order (weights are drawn from it first) */
    uint32_t *order;  /* n: permutation of the training set */
    float *by;        /* batch x outputs: one-hot labels or the images */
    float *grad;      /* n_params */
    int epoch;        /* epochs completed */
    /* the unfinished epoch (after a progress callback stopped it): its
     * examples trained on (0 at an epoch boundary: the next epoch
     * shuffles) and the sum of their losses; updated at every step */
    int seen;
    double loss_sum;
    double seconds;   /* training time so far */
    kfac_dist *dist;  /* the process group, from the start a group of one
                         (alone) that kfac_trainer_set_mpi_comm may fill;
                         the optimizer holds it from its creation */
};

/* Classifiers learn labels; every other loss reconstructs its input (the
 * autoencoder). Checks that the data fits the network of `spec` (before
 * the network is allocated: a net file for other data may be large). */
static kfac_status check_fit(const kfac_net_spec *spec, const kfac_dataset *d, const char *who)
{
    if (!d || !d->x || d->n < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "empty dataset");
    if (d->features != spec->inputs) {
        char pool[64] = "";
        if (spec->input_pool > 1)
            snprintf(pool, sizeof pool, ", or images that pool %d makes that size", spec->input_pool);
        return kfac_fail(KFAC_ERR_SHAPE,
                         "the data has %d feature%s per example (%dx%d) but the network takes %d input%s%s",
                         d->features, KFAC_S(d->features), d->rows, d->cols, spec->inputs, KFAC_S(spec->inputs), pool);
    }
    int outputs = kfac_net_spec_outputs(spec);
    if (spec->loss == KFAC_LOSS_SOFTMAX_XENT) {
        if (!d->labels)
            return kfac_fail(KFAC_ERR_SHAPE, "a classifier needs labels");
        if (outputs != d->classes)
            return kfac_fail(KFAC_ERR_SHAPE, "the data has %d class%s but the network has %d output%s",
                             d->classes, d->classes == 1 ? "" : "es", outputs, KFAC_S(outputs));
    } else if (outputs != d->features) {
        return kfac_fail(KFAC_ERR_SHAPE,
                         "loss %s reconstructs the input: %d output%s needed, the network has %d",
                         kfac_loss_name(spec->loss), d->features, KFAC_S(d->features), outputs);
    }
    /* the rest of what a hand-built dataset may get wrong: its shape, and
     * every label (the other losses read none) */
    return kfac_dataset_check(d, spec->loss == KFAC_LOSS_SOFTMAX_XENT ? outputs : 0, who);
}

/* Gather rows idx[first..first+n) of d (or rows first.. if idx is NULL)
 * into the network's input buffer (kfac_net_input_rows: a first dense
 * layer's abar, whose ones column stays) and the targets y. The labels were checked when the
 * trainer was made (or the evaluation began); a label the caller changed
 * since into one past the outputs is not written, but refused. */
static kfac_status gather(kfac_net *net, const kfac_dataset *d, const uint32_t *idx, int first, int n, float *y)
{
    size_t ldx;
    float *x = kfac_net_input_rows(net, &ldx);
    int f = d->features, outputs = net->outputs;
    int classify = net->spec.loss == KFAC_LOSS_SOFTMAX_XENT;
    long bad = -1; /* the largest row of a bad label */
#pragma omp parallel for schedule(static) if ((long)n * f > KFAC_PAR_COPY) reduction(max : bad)
    for (int i = 0; i < n; i++) {
        size_t row = idx ? idx[first + i] : (size_t)(first + i);
        const float *src = d->x + row * f;
        memcpy(x + (size_t)i * ldx, src, sizeof(float) * (size_t)f);
        float *t = y + (size_t)i * outputs;
        if (classify) {
            memset(t, 0, sizeof(float) * (size_t)outputs);
            if (d->labels[row] < outputs)
                t[d->labels[row]] = 1.0f;
            else
                bad = KFAC_MAX(bad, (long)row);
        } else {
            memcpy(t, src, sizeof(float) * (size_t)f);
        }
    }
    if (bad >= 0)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "label %d at index %ld outside [0, %d) (changed after the check)",
                         (int)d->labels[bad], bad, outputs);
    return KFAC_OK;
}

void kfac_trainer_free(kfac_trainer *t)
{
    if (!t)
        return;
    kfac_net_free(t->net);
    kfac_optimizer_free(t->opt);
    free(t->order);
    kfac_free_floats(t->by);
    kfac_free_floats(t->grad);
    kfac_dist_free(t->dist);
    kfac_dataset_free(&t->pooled);
    free(t);
}

kfac_status kfac_trainer_new(const kfac_net_spec *spec, const kfac_train_params *p,
                             const kfac_dataset *train, kfac_trainer **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_trainer_new: out is NULL");
    *out = NULL;
    kfac_train_params defaults;
    if (!p) {
        kfac_train_params_init(&defaults);
        p = &defaults;
    }
    kfac_status st;
    if ((st = kfac_net_spec_validate(spec)) != KFAC_OK || (st = kfac_train_params_validate(p)) != KFAC_OK)
        return st;
    if (!train || train->n < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "no training data");
    kfac_dataset pooled;
    kfac_trainer *t = NULL;
    if ((st = kfac_dataset_for_net(spec, train, &pooled, &train)) != KFAC_OK)
        return st;
    if ((st = check_fit(spec, train, "kfac_trainer_new")) != KFAC_OK)
        goto refuse;
    /* val_fraction: the last n_val examples, rounded to the nearest */
    int n_val = (int)lround((double)p->val_fraction * train->n);
    if (p->val_fraction > 0 && (n_val < 1 || n_val >= train->n)) {
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "val_fraction %g of %d example%s leaves %s", (double)p->val_fraction,
                       train->n, KFAC_S(train->n), n_val < 1 ? "no example to validate" : "no example to train");
        goto refuse;
    }
    if (p->batch > train->n - n_val) {
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "batch %d larger than the training set (%d example%s)", p->batch,
                       train->n - n_val, KFAC_S(train->n - n_val));
        goto refuse;
    }

    if (!(t = calloc(1, sizeof *t))) {
        st = kfac_fail(KFAC_ERR_NOMEM, "trainer: out of memory");
        goto refuse;
    }
    t->p = *p;
    t->pooled = pooled; /* t owns it from here */
    t->train = train == &pooled ? &t->pooled : train;
    if (n_val > 0) { /* views of the same buffers: the last n_val rows validate */
        t->split_train = *t->train;
        t->split_train.n = train->n - n_val;
        t->val = *t->train;
        t->val.n = n_val;
        t->val.x += (size_t)t->split_train.n * (size_t)train->features;
        if (t->val.labels)
            t->val.labels += t->split_train.n;
        t->train = &t->split_train;
        train = t->train;
    }
    t->best_val = INFINITY;
    kfac_rng_seed(&t->rng, p->seed);
    if ((st = kfac_net_new(spec, p->batch, &t->net)) != KFAC_OK ||
        (st = kfac_net_init_weights(t->net, &t->rng)) != KFAC_OK ||
        (st = kfac_dist_new_alone(&t->dist)) != KFAC_OK ||
        (st = kfac_optimizer_new_for_net(p, t->net, t->dist, &t->opt)) != KFAC_OK)
        goto fail;
    t->order = malloc(sizeof *t->order * (size_t)train->n);
    t->by = kfac_alloc_floats((size_t)p->batch * (size_t)t->net->outputs);
    t->grad = kfac_alloc_floats(t->net->n_params);
    if (!t->order || !t->by || !t->grad) {
        st = kfac_fail(KFAC_ERR_NOMEM, "trainer buffers: out of memory");
        goto fail;
    }
    for (int i = 0; i < train->n; i++)
        t->order[i] = (uint32_t)i;
    if ((st = kfac_blas_room()) != KFAC_OK) /* after everything is allocated */
        goto fail;
    *out = t;
    return KFAC_OK;
fail:
    kfac_trainer_free(t);
    return st;
refuse:
    kfac_dataset_free(&pooled);
    return st;
}

kfac_net *kfac_trainer_net(kfac_trainer *t) { return t ? t->net : NULL; }
int kfac_trainer_epochs_done(const kfac_trainer *t) { return t ? t->epoch : -1; }
kfac_optimizer_kind kfac_trainer_optimizer(const kfac_trainer *t) { return kfac_optimizer_get_kind(t->opt); }

void kfac_trainer_io(kfac_trainer *t, kfac_ckio *io)
{
    kfac_ckio_floats(io, t->net->theta, t->net->n_params, "network parameters");
    kfac_optimizer_io(t->opt, io);
    kfac_ckio_int(io, &t->epoch);
    kfac_ckio_f64(io, &t->seconds);
    for (int i = 0; i < 4; i++)
        kfac_ckio_u64(io, &t->rng.s[i]);
    /* the order is a permutation of this data set */
    kfac_ckio_expect(io, (uint64_t)t->train->n, "the training-set size");
    kfac_ckio_perm(io, t->order, (size_t)t->train->n);
    /* version 2: stopped in the middle of an epoch, where it stands there
     * (version 1 files are at an epoch boundary) */
    if (io->mode == KFAC_CKIO_WRITE && t->seen > 0)
        io->version = KFAC_MAX(io->version, 2);
    int seen = 0;
    double loss_sum = 0.0;
    if (io->version >= 2) {
        seen = t->seen, loss_sum = t->loss_sum;
        kfac_ckio_int_range(io, &seen, 0, t->train->n - 1, "the examples done in the epoch");
        kfac_ckio_f64(io, &loss_sum);
    }
    if (io->mode == KFAC_CKIO_READ && io->status == KFAC_OK)
        t->seen = seen, t->loss_sum = loss_sum;
}

kfac_status kfac_trainer_position(const kfac_trainer *t, kfac_epoch_position *out)
{
    if (!t || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_trainer_position: NULL argument");
    out->epoch = t->epoch + 1;
    out->examples = t->seen;
    out->total = t->train->n;
    out->mean_loss = t->seen > 0 ? t->loss_sum / t->seen : NAN;
    return KFAC_OK;
}

kfac_status kfac_trainer_kfac_stats(const kfac_trainer *t, kfac_kfac_stats *out)
{
    if (!t || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_trainer_kfac_stats: NULL argument");
    return kfac_optimizer_report(t->opt, out);
}

/* FNV-1a over what must be the same on every rank of a group */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}
#define FNV(h, x) fnv((h), &(x), sizeof(x))

/* The replicated state and settings: weights, generator, data order,
 * progress and every training parameter (field by field from the table:
 * no padding bytes). */
static uint64_t state_hash(const kfac_trainer *t)
{
    long steps = kfac_optimizer_steps(t->opt);
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, t->net->theta, sizeof(float) * t->net->n_params);
    h = fnv(h, t->rng.s, sizeof t->rng.s);
    h = fnv(h, t->order, sizeof(uint32_t) * (size_t)t->train->n);
    h = FNV(h, t->train->n), h = FNV(h, t->epoch), h = FNV(h, t->seen), h = FNV(h, steps);
    kfac_train_params p = t->p;
    for (int i = 0; i < kfac_param_defs_count; i++) {
        const kfac_param_def *d = &kfac_param_defs[i];
        h = fnv(h, kfac_param_field(d, &p), d->v.type == KFAC_V_U64 ? sizeof(uint64_t) : sizeof(int));
    }
    /* the optimizers' own settings: floats, NaN where they inherit */
    h = fnv(h, p.per_optimizer, sizeof p.per_optimizer);
    return h;
}

kfac_status kfac_trainer_agree(kfac_trainer *t, kfac_status st)
{
    if (!kfac_dist_grouped(t->dist))
        return st;
    int worst = (int)st;
    kfac_status cst = kfac_dist_max_ints(t->dist, &worst, 1);
    if (cst != KFAC_OK)
        return cst;
    if (st != KFAC_OK) /* keep this rank's own detail */
        return st;
    if (worst != KFAC_OK)
        return kfac_fail((kfac_status)worst, "another process of the group failed: %s",
                         kfac_strerror((kfac_status)worst));
    return KFAC_OK;
}

/* Every rank must hold the same state, or the group would drift apart:
 * rank 0's hash against each rank's, agreed by all. */
static kfac_status check_replicated(kfac_trainer *t, kfac_dist *d)
{
    uint64_t mine = state_hash(t), root = mine;
    kfac_status st = kfac_dist_bcast(d, &root, sizeof root, 0);
    if (st != KFAC_OK)
        return st;
    int differ = root != mine, any = differ;
    if ((st = kfac_dist_max_ints(d, &any, 1)) != KFAC_OK)
        return st;
    if (any)
        return kfac_fail(KFAC_ERR_INVALID_ARG,
                         "the processes' trainers differ (%s): every rank needs the same net, data, "
                         "parameters and seed",
                         differ ? "this one differs from rank 0's" : "another differs from rank 0's");
    return KFAC_OK;
}

kfac_status kfac_trainer_set_mpi_comm(kfac_trainer *t, const void *comm)
{
    kfac_clear_error();
    if (!t || !comm)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_trainer_set_mpi_comm: NULL argument");
    if (kfac_dist_grouped(t->dist))
        return kfac_fail(KFAC_ERR_STATE, "kfac_trainer_set_mpi_comm: the trainer already has a communicator");
    kfac_dist *d;
    kfac_status st = kfac_dist_new(comm, &d);
    if (st != KFAC_OK)
        return st;
    int size = kfac_dist_size(d), n = t->train->n, batch = t->p.batch, last = n % batch;
    if (size == 1) { /* a group of one is the single process */
        kfac_dist_free(d);
        return KFAC_OK;
    }
    if ((st = check_replicated(t, d)) != KFAC_OK)
        goto fail;
    /* every rank needs at least one row of every batch, the last included
     * (the same test on every rank: the settings are the same) */
    if (batch < size || (last > 0 && last < size)) {
        st = kfac_fail(KFAC_ERR_INVALID_ARG,
                       "batch %d over %d processes: %s; every batch needs at least one row per process", batch,
                       size, batch < size ? "fewer rows than processes"
                                          : "the last batch of an epoch has fewer rows than processes");
        goto fail;
    }
    kfac_dist_take(t->dist, d); /* the optimizer's group too: the same object */
    return KFAC_OK;
fail:
    kfac_dist_free(d);
    return st;
}

int kfac_trainer_rank(const kfac_trainer *t) { return t ? kfac_dist_rank(t->dist) : -1; }
int kfac_trainer_ranks(const kfac_trainer *t) { return t ? kfac_dist_size(t->dist) : -1; }

double kfac_lr_factor(const kfac_train_params *p, long t, long steps_per_epoch)
{
    double warm = (double)p->warmup_epochs * (double)steps_per_epoch, f = 1.0;
    if (t < warm) /* linear from 0: the first step takes 1/warm of lr */
        f = (double)(t + 1) / warm;
    switch (p->lr_schedule) {
    case KFAC_LR_STEP:
        f *= pow((double)p->lr_step_factor, (double)(t / ((long)p->lr_step_epochs * steps_per_epoch)));
        break;
    case KFAC_LR_COSINE: {
        /* over the steps after the warm-up; never 0 (t < total) */
        double total = (double)p->epochs * (double)steps_per_epoch, span = total - warm;
        if (span > 0.0 && t >= warm)
            f *= 0.5 * (1.0 + cos(acos(-1.0) * ((double)t - warm) / span));
        break;
    }
    default:
        break;
    }
    return f;
}

static kfac_status epoch(kfac_trainer *t, kfac_progress_fn progress, void *user, kfac_epoch_stats *stats)
{
    double start = kfac_seconds();
    int n = t->train->n, batch = t->p.batch;
    /* Fisher-Yates on the running order: each epoch a fresh permutation;
     * an unfinished epoch goes on in its own */
    if (t->seen == 0)
        for (int i = n - 1; i > 0; i--) {
            uint32_t j = kfac_rng_below(&t->rng, (uint32_t)i + 1), tmp = t->order[i];
            t->order[i] = t->order[j];
            t->order[j] = tmp;
        }
    /* the steps of the epoch, the last batch maybe smaller; resumed at
     * example `seen` (a multiple of the batch unless the batch changed) */
    long done = (t->seen + batch - 1) / batch, steps = done + (n - t->seen + batch - 1) / batch;
    int rank = kfac_dist_rank(t->dist), size = kfac_dist_size(t->dist);
    int stop = 0;
    kfac_status st = KFAC_OK;
    long s;
    for (s = done; s < steps; s++) {
        int first = t->seen, rows = KFAC_MIN(batch, n - first);
        /* this process's slice of the batch: rows [lo, hi) */
        int lo = (int)((long)rows * rank / size), hi = (int)((long)rows * (rank + 1) / size), mine = hi - lo;
        double loss;
        /* a convolution keeps its patches only for a step that reads them */
        kfac_net_keep_inputs(t->net, kfac_optimizer_keeps_inputs(t->opt));
        if ((st = gather(t->net, t->train, t->order, first + lo, mine, t->by)) != KFAC_OK ||
            (st = kfac_net_forward_in_place(t->net, mine)) != KFAC_OK ||
            (st = kfac_net_loss(t->net, t->by, &loss, NULL)) != KFAC_OK)
            break;
        if (kfac_dist_grouped(t->dist)) {
            /* the batch's loss, and whether any rank's callback stopped
             * the epoch after the last step: all ranks decide alike */
            double agree[2] = {loss * mine, stop};
            if ((st = kfac_dist_sum_doubles(t->dist, agree, 2)) != KFAC_OK)
                break;
            if (agree[1] > 0.0) { /* every rank stops here, unfinished */
                stop = 1;
                break;
            }
            loss = agree[0] / rows;
        }
        if (!isfinite(loss)) {
            st = kfac_fail(KFAC_ERR_NUMERIC, "training diverged: loss is %g at epoch %d, step %ld", loss,
                           t->epoch + 1, s + 1);
            break;
        }
        kfac_step_ctx ctx = {t->net, t->by, mine, &t->rng, lo, rows, NULL};
        /* K-FAC forms what it needs of the gradient from abar and g, but
         * for the layers whose abar was dropped: the batch's mean over the
         * group, this process's share */
        float *grad = kfac_optimizer_flat_gradient(t->opt) ? t->grad : NULL;
        int dropped = 0;
        if ((st = grad ? kfac_net_backward(t->net, t->by, grad)
                       : kfac_net_backward_dropped(t->net, t->by, t->grad, 1.0f / rows, &dropped)) != KFAC_OK)
            break;
        ctx.grad_dropped = dropped ? t->grad : NULL;
        if (grad && kfac_dist_grouped(t->dist)) {
            /* the batch's mean gradient: each slice's mean weighted by its rows */
            float w = (float)mine / (float)rows;
            for (size_t i = 0; i < t->net->n_params; i++)
                grad[i] *= w;
            if ((st = kfac_dist_sum_floats(t->dist, grad, t->net->n_params)) != KFAC_OK)
                break;
        }
        /* steps taken so far, saved in checkpoints: a resumed run follows
         * the same schedule */
        kfac_optimizer_set_lr_factor(t->opt, (float)kfac_lr_factor(&t->p, kfac_optimizer_steps(t->opt), steps));
        if ((st = kfac_optimizer_step_ctx(t->opt, t->net->theta, grad, &ctx)) != KFAC_OK)
            break;
        t->loss_sum += loss * rows;
        t->seen += rows;
        done = s + 1;
        if (progress && progress(user, s + 1, steps)) {
            stop = 1;
            if (!kfac_dist_grouped(t->dist)) /* in a group: at the next step's agreement */
                break;
        }
    }
    /* The loss is checked before each step, so a last step of the epoch
     * that overflowed the parameters would otherwise only show in the next
     * epoch, after the caller has evaluated (NaN) and saved (a checkpoint
     * of NaN) this one. One pass over theta an epoch. */
    if (st == KFAC_OK && done > 0) {
        const float *theta = t->net->theta;
        size_t np = t->net->n_params, bad = np;
        for (size_t i = 0; i < np && bad == np; i++)
            if (!isfinite(theta[i]))
                bad = i;
        if (bad < np)
            st = kfac_fail(KFAC_ERR_NUMERIC, "training diverged: parameter %zu is %g after epoch %d, step %ld",
                           bad, theta[bad], t->epoch + 1, done);
    }
    t->seconds += kfac_seconds() - start;
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->epoch = t->epoch + 1;
        stats->seconds = t->seconds;
        stats->train_loss = t->seen > 0 ? t->loss_sum / (double)t->seen : NAN;
    }
    /* stopped by the callback before the end: the epoch stays unfinished,
     * to be finished by the next call (or after a checkpoint); a failure
     * ends it as before */
    if (st == KFAC_OK && stop && t->seen < n)
        return st;
    t->epoch++;
    t->seen = 0;
    t->loss_sum = 0.0;
    return st;
}

kfac_status kfac_trainer_epoch(kfac_trainer *t, kfac_progress_fn progress, void *user,
                               kfac_epoch_stats *stats)
{
    if (!t)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_trainer_epoch: trainer is NULL");
    /* Values that decay toward zero step after step (Adam's m and v,
     * momentum of a weight whose gradient stopped) pass through the
     * denormals, where every operation takes the processor's slow path:
     * an Adam epoch of fmnist-mlp cost 1.7-1.9x an SGD epoch, 1.07x
     * flushed, and the weights after 3 epochs are the same bits. */
    kfac_fp_flush_begin();
    kfac_status st = epoch(t, progress, user, stats);
    kfac_fp_flush_end();
    if (st != KFAC_OK || t->val.n == 0)
        return st;
    /* the held-out examples, after the epoch and outside its seconds (in
     * a group every rank holds them all and computes the same) */
    double vl = 0.0, va = 0.0;
    if ((st = kfac_evaluate(t->net, &t->val, &vl, &va)) != KFAC_OK)
        return st;
    if (vl < t->best_val) {
        t->best_val = vl;
        t->best_epoch = t->epoch;
        t->stale = 0;
    } else {
        t->stale++;
    }
    if (stats) {
        stats->val_n = t->val.n;
        stats->val_loss = vl;
        stats->val_acc = va;
        stats->best_epoch = t->best_epoch;
        stats->early_stop = t->p.early_stop > 0 && t->stale >= t->p.early_stop;
    }
    return KFAC_OK;
}

kfac_status kfac_evaluate(kfac_net *net, const kfac_dataset *d, double *loss, double *metric)
{
    kfac_clear_error();
    if (!net || !d)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_evaluate: NULL argument");
    kfac_dataset pooled;
    float *y = NULL;
    double loss_sum = 0.0, metric_sum = 0.0;
    kfac_status st = kfac_dataset_for_net(&net->spec, d, &pooled, &d);
    if (st != KFAC_OK || (st = check_fit(&net->spec, d, "kfac_evaluate")) != KFAC_OK ||
        (st = kfac_blas_room()) != KFAC_OK)
        goto done;
    int chunk = net->max_batch, outputs = net->outputs;
    if (!(y = kfac_alloc_floats((size_t)chunk * (size_t)outputs))) {
        st = kfac_fail(KFAC_ERR_NOMEM, "evaluation buffers: out of memory");
        goto done;
    }
    for (int first = 0; first < d->n; first += chunk) {
        int rows = KFAC_MIN(chunk, d->n - first);
        double l, m;
        if ((st = gather(net, d, NULL, first, rows, y)) != KFAC_OK ||
            (st = kfac_net_forward_in_place(net, rows)) != KFAC_OK || (st = kfac_net_loss(net, y, &l, &m)) != KFAC_OK)
            goto done;
        loss_sum += l * rows;
        metric_sum += m * rows;
    }
    if (loss)
        *loss = loss_sum / d->n;
    if (metric)
        *metric = metric_sum / d->n;
done:
    kfac_free_floats(y);
    kfac_dataset_free(&pooled);
    return st;
}
