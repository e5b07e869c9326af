/* optim_type.h - what every optimizer algorithm implements: a const type
 * table (as GSL multimin's gsl_multimin_fdfminimizer_type: sizes, alloc,
 * iterate, free) over an opaque state. optim.c holds the table of
 * all kinds and the optimizer object built on it; an algorithm's own file
 * (kfac_opt.c) needs only this header, so nothing below the table knows
 * the table. */
#ifndef KFAC_OPTIM_TYPE_H
#define KFAC_OPTIM_TYPE_H

#include "kfac.h"

struct kfac_ckio; /* ckio.h */
struct kfac_dist; /* dist.h */

/* What a curvature-aware step may need besides theta and the gradient: the
 * network right after forward + backward on the batch (abar, including the
 * input abar_0, and g recorded), the targets, and the generator for sampled
 * targets. First-order methods ignore it (it may be NULL). */
typedef struct kfac_step_ctx {
    kfac_net *net;
    const float *y; /* batch x outputs, the training targets */
    int batch;
    kfac_rng *rng;  /* the same on every rank of a process group */
    /* In a process group: this process's rows are rows [row0, row0 +
     * batch) of a batch of total_rows over the group. 0 and 0 alone. */
    int row0, total_rows;
    /* The weight gradients, (1/total_rows) times the sum over this
     * process's rows, of the layers whose abar the forward pass did not
     * keep (keeps_inputs below), at their offsets in theta; NULL when
     * every layer kept it. */
    const float *grad_dropped;
} kfac_step_ctx;

/* One step's operands, from the optimizer object. */
typedef struct kfac_step_args {
    const kfac_optim_params *p; /* lr, momentum, Adam's betas and eps */
    size_t n;                   /* parameters */
    float *theta;               /* updated in place */
    const float *grad;          /* the mean gradient with weight decay added;
                                   NULL when the type's flat_gradient is 0 */
    float *const *vec;          /* the type's state_vectors vectors of n */
    long t;                     /* 1-based step number */
    float lr;                   /* this step's learning rate: p->lr times the
                                   schedule's factor */
} kfac_step_args;

/* (its name is its kind's, kfac_optimizer_name) */
typedef struct kfac_optimizer_type {
    /* Per-parameter state vectors of n floats (momentum 1, Adam 2),
     * allocated and zeroed by the optimizer object, saved by it. */
    int state_vectors;
    /* 1: step reads the flat mean gradient; 0: the trainer may skip
     * computing it (K-FAC works from the recorded abar and g, and applies
     * weight decay itself). */
    int flat_gradient;
    /* An algorithm with state of its own (K-FAC) allocates it for a
     * network, from the whole configuration, and keeps `group`, the
     * process group its steps run over (dist.h; NULL or a group of one:
     * alone), which may join a communicator later; NULL for the
     * first-order methods, which then need no network. */
    kfac_status (*alloc)(const kfac_net *net, const kfac_train_params *tp, const struct kfac_dist *group,
                         void **state);
    void (*free)(void *state);
    kfac_status (*step)(void *state, const kfac_step_args *a, const kfac_step_ctx *ctx);
    /* Optional slots (NULL: nothing to do). io: visit the own state for a
     * checkpoint. report: counters and timings of a curvature method. */
    void (*io)(void *state, struct kfac_ckio *io);
    void (*report)(const void *state, kfac_kfac_stats *out);
    /* Whether the next step reads every layer's abar (else the trainer's
     * forward pass may drop a convolution's patches and its backward pass
     * forms that layer's gradient instead: ctx->grad_dropped). NULL: when
     * the type reads no flat gradient. */
    int (*keeps_inputs)(const void *state);
} kfac_optimizer_type;

#endif
