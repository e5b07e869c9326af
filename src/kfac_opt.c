/* kfac_opt.c - the K-FAC optimizer type on a kfac_net: the step engine of
 * precond.c (the public kfac_precond) fed from what the network recorded,
 * plus what only a network can give it: targets sampled from the model and
 * one extra backward pass for the G statistics (docs/algorithm.md §3), and exact
 * Fisher quadratic forms (forward mode) and batch losses for the quadratic rule
 * (docs/algorithm.md §5-6). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ckio.h"
#include "common.h"
#include "fisher.h"
#include "kfac_opt.h"
#include "loss.h"
#include "net.h"
#include "precond.h"

typedef struct kfac_state {
    kfac_fisher_kind fisher_kind;
    int quad;            /* QUADRATIC: the engine needs the batch loss */
    float fvp_fraction;
    kfac_precond *pc;
    kfac_fisher *fisher; /* QUADRATIC only */
    kfac_net *net;       /* the current step's network and targets, for */
    const float *y;      /* the callbacks */
    int fvp_rows;        /* QUADRATIC: the F forms over this process's first rows */
    float *gspare;       /* max_batch x d_out per layer: where the
                            sampled-target pass writes its g, so the true g
                            stays where the backward pass left it */
    float *ysample;      /* max_batch x outputs: targets drawn from the model */
    float *jv;           /* QUADRATIC: max_batch x d_out per block, for the
                            batch form's abar delta^T (docs/algorithm.md §5.2) */
} kfac_state;

/* v1^T F v2 and the like by forward mode alone, on the same rows: all the
 * quadratic rule reads of F (docs/algorithm.md §6), and the loss's slopes
 * along v1 and v2 */
static kfac_status net_fisher_model(void *user, const float *v1, const float *v2, double s[5])
{
    kfac_state *st = user;
    kfac_net *net = st->net;
    /* the last layer's g is the labels' (the sampled-target pass writes
     * elsewhere): the slopes are the training loss's */
    const float *gout = net->layers[net->n_layers - 1].g;
    /* where a layer took the batch form, its product along the direction
     * comes cheaper from the form's factors */
    const float *pre[KFAC_MAX_LAYERS] = {0};
    float *jv = st->jv;
    for (int k = 0; k < net->n_blocks; k++) {
        int l = net->block_layer[k];
        if (kfac_precond_direction_rows(st->pc, k, st->fvp_rows, jv) == 1)
            pre[l] = jv;
        jv += (size_t)net->max_batch * (size_t)net->layers[l].d_out;
    }
    return kfac_fisher_model(st->fisher, net, st->fvp_rows, gout, v1, pre, v2, s);
}

/* the batch loss at the updated weights: one more forward pass */
static kfac_status net_batch_loss(void *user, double *loss)
{
    kfac_state *s = user;
    kfac_status st = kfac_net_forward_in_place(s->net, s->net->batch);
    return st != KFAC_OK ? st : kfac_net_loss(s->net, s->y, loss, NULL);
}

static void kfac_free(void *state)
{
    kfac_state *s = state;
    if (!s)
        return;
    kfac_precond_free(s->pc);
    kfac_fisher_free(s->fisher);
    kfac_free_floats(s->gspare), kfac_free_floats(s->ysample), kfac_free_floats(s->jv);
    free(s);
}

static kfac_status kfac_alloc(const kfac_net *net, const kfac_train_params *tp, const struct kfac_dist *group,
                              void **state)
{
    /* tp was validated at the public entry (kfac_trainer_new) */
    const kfac_kfac_params *kp = &tp->kfac;
    kfac_status st;
    kfac_state *s = calloc(1, sizeof *s);
    if (!s)
        return kfac_fail(KFAC_ERR_NOMEM, "K-FAC: out of memory");
    s->fisher_kind = kp->fisher;
    s->quad = kp->rule == KFAC_RULE_QUADRATIC;
    s->fvp_fraction = kp->fvp_fraction;
    int L = net->n_blocks, d_in[KFAC_MAX_LAYERS], d_out[KFAC_MAX_LAYERS], pos[KFAC_MAX_LAYERS];
    kfac_net_blocks(net, d_in, d_out, pos);
    size_t g_total = 0; /* the sampled-target pass's g, every layer's */
    for (int l = 0; l < net->n_layers; l++)
        g_total += (size_t)net->max_batch * (size_t)net->layers[l].out_size;
    kfac_optim_params op;
    kfac_train_params_resolve(tp, &op);
    if ((st = kfac_precond_new_in_group(L, d_in, d_out, pos, net->max_batch, &op, kp, group, &s->pc)) != KFAC_OK)
        goto fail;
    if (!(s->gspare = kfac_alloc_floats(g_total)) ||
        !(s->ysample = kfac_alloc_floats((size_t)net->max_batch * (size_t)net->outputs))) {
        st = kfac_fail(KFAC_ERR_NOMEM, "K-FAC buffers: out of memory");
        goto fail;
    }
    size_t jv_total = 0;
    for (int k = 0; k < L; k++)
        jv_total += (size_t)net->max_batch * (size_t)d_out[k];
    if (kp->rule == KFAC_RULE_QUADRATIC && !(s->jv = kfac_alloc_floats(jv_total))) {
        st = kfac_fail(KFAC_ERR_NOMEM, "K-FAC buffers: out of memory");
        goto fail;
    }
    if (kp->rule == KFAC_RULE_QUADRATIC &&
        ((st = kfac_fisher_new(net, &s->fisher)) != KFAC_OK ||
         (st = kfac_precond_set_fisher(s->pc, NULL, net_batch_loss, s)) != KFAC_OK ||
         (st = kfac_precond_set_fisher_model(s->pc, net_fisher_model, s)) != KFAC_OK))
        goto fail;
    *state = s;
    return KFAC_OK;
fail:
    kfac_free(s);
    return st;
}

static void kfac_report(const void *state, kfac_kfac_stats *out)
{
    const kfac_state *s = state;
    kfac_precond_get_stats(s->pc, out);
}

static void kfac_io(void *state, kfac_ckio *io)
{
    kfac_state *s = state;
    kfac_precond_io(s->pc, io);
}

/* For the statistics (docs/algorithm.md §3): G's g from targets sampled
 * from the model for the first m rows, back-propagated alone into the
 * spare buffers, while gtrue keeps each layer's g of the training labels
 * (where the network's own backward pass left them), which the direction
 * needs. Row i's draw is seeded by one number from rng and its index
 * row0 + i in the whole batch, so a batch split over processes draws what
 * one process would. The empirical Fisher uses the labels' g for both. */
static kfac_status sample_pass(kfac_state *s, kfac_net *net, int m, int row0, kfac_rng *rng, const float **gtrue,
                               const float **gstat)
{
    int L = net->n_layers, K = net->n_blocks;
    for (int k = 0; k < K; k++)
        gtrue[k] = gstat[k] = net->layers[net->block_layer[k]].g;
    if (s->fisher_kind != KFAC_FISHER_SAMPLED)
        return KFAC_OK;
    uint64_t base = kfac_rng_next(rng); /* taken by every rank, rows or not */
    if (m < 1) /* none of the statistics rows is this process's */
        return KFAC_OK;
    float *spare = s->gspare, *into[KFAC_MAX_LAYERS];
    for (int l = 0; l < L; l++) {
        into[l] = spare;
        spare += (size_t)net->max_batch * (size_t)net->layers[l].out_size;
    }
    kfac_loss_types[net->spec.loss].sample(net->z, s->ysample, m, net->outputs, base, row0);
    kfac_status st = kfac_net_backward_into(net, s->ysample, m, into);
    for (int k = 0; k < K && st == KFAC_OK; k++)
        gstat[k] = into[net->block_layer[k]];
    return st;
}

/* Every layer's abar is read by a statistics round (and by the quadratic
 * rule's forward passes, every step); between rounds the weight form
 * needs only a convolution's gradient, which its backward pass forms
 * without keeping the patches (docs/algorithm.md §2.1). */
static int kfac_keeps_inputs(const void *state)
{
    const kfac_state *s = state;
    return s->quad || kfac_precond_stats_due(s->pc);
}

static kfac_status kfac_step(void *state, const kfac_step_args *a, const kfac_step_ctx *ctx)
{
    /* the gradient is formed from abar and g where needed; the engine
     * counts the steps */
    kfac_state *s = state;
    kfac_net *net = ctx ? ctx->net : NULL;
    if (!net || !ctx->y || !ctx->rng || net->batch < 1 || a->theta != net->theta)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC step without its network's forward and backward pass");
    int B = net->batch, K = net->n_blocks;
    int total = ctx->total_rows > 0 ? ctx->total_rows : B;
    kfac_precond_input in = {.rows = B, .grad = NULL, .total_rows = total};
    float *w[KFAC_MAX_LAYERS];
    const float *abar[KFAC_MAX_LAYERS], *gtrue[KFAC_MAX_LAYERS], *gstat[KFAC_MAX_LAYERS], *lgrad[KFAC_MAX_LAYERS];
    int dropped = 0;
    for (int k = 0; k < K; k++) {
        kfac_layer *ly = &net->layers[net->block_layer[k]];
        w[k] = net->theta + ly->offset;
        abar[k] = ly->abar;
        gtrue[k] = gstat[k] = ly->g;
        /* a layer without its abar comes with the backward pass's gradient */
        lgrad[k] = NULL;
        if (!kfac_layer_kept(ly)) {
            if (!ctx->grad_dropped || kfac_keeps_inputs(s))
                return kfac_fail(KFAC_ERR_STATE, "K-FAC step: layer %d's inputs were not kept, and the step reads "
                                                 "them", net->block_layer[k] + 1);
            lgrad[k] = ctx->grad_dropped + ly->offset;
            dropped = 1;
        }
    }
    in.layer_grad = dropped ? lgrad : NULL;
    kfac_status st;
    if (s->quad && (st = kfac_net_loss(net, ctx->y, &in.loss0, NULL)) != KFAC_OK)
        return st;
    if (kfac_precond_stats_due(s->pc)) {
        double t0 = kfac_seconds();
        /* the statistics read the first rows of the whole batch: this
         * process's part of them */
        in.total_stat_rows = kfac_precond_stat_rows(s->pc, total);
        in.stat_rows = KFAC_MAX(0, KFAC_MIN(in.total_stat_rows - ctx->row0, B));
        st = sample_pass(s, net, in.stat_rows, ctx->row0, ctx->rng, gtrue, gstat);
        kfac_precond_stats_ref(s->pc)->seconds_stats += kfac_seconds() - t0;
        if (st != KFAC_OK)
            return st;
    }
    /* the quadratic model's F products on the first fvp_fraction of the
     * whole batch, like the statistics: this process's part of them */
    in.total_fvp_rows = KFAC_MAX(1, KFAC_MIN(total, (int)ceil((double)s->fvp_fraction * total)));
    in.fvp_rows = s->fvp_rows = KFAC_MAX(0, KFAC_MIN(in.total_fvp_rows - ctx->row0, B));
    in.w = w;
    in.abar = abar;
    in.gtrue = gtrue;
    in.gstat = gstat;
    s->net = net;
    s->y = ctx->y;
    if ((st = kfac_precond_set_lr(s->pc, a->lr)) != KFAC_OK) /* the schedule's */
        return st;
    return kfac_precond_step_input(s->pc, &in);
}

const kfac_optimizer_type kfac_kfac_type = {
    .alloc = kfac_alloc,
    .free = kfac_free,
    .step = kfac_step,
    .io = kfac_io,
    .report = kfac_report,
    .keeps_inputs = kfac_keeps_inputs,
};
