/* optim.h - the optimizer interface: each algorithm is a const type table
 * (as GSL multimin's), indexed by kfac_optimizer_kind, so tests and
 * benchmarks loop over all of them. K-FAC joins the table: its step also
 * gets the network and the batch through kfac_step_ctx. */
#ifndef KFAC_OPTIM_H
#define KFAC_OPTIM_H

#include "kfac.h"

struct kfac_ckio; /* checkpoint.h */

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
} kfac_step_ctx;

typedef struct kfac_optimizer_type {
    const char *name;
    /* Per-parameter state vectors of n_params floats this algorithm keeps
     * (momentum 1, Adam 2); allocated and zeroed by kfac_optimizer_new. */
    int state_vectors;
    /* 1: step reads the flat mean gradient; 0: the trainer may skip
     * computing it (K-FAC works from the recorded abar and g). */
    int flat_gradient;
    /* Curvature-aware algorithms hold per-network state in opt->ext:
     * attach sizes it for a network, detach frees it. NULL for first-order
     * methods, which then need no network. */
    kfac_status (*attach)(kfac_optimizer *opt, const kfac_net *net, const kfac_kfac_params *kp);
    void (*detach)(kfac_optimizer *opt);
    /* theta <- update(theta, grad); t is the 1-based step number; grad
     * already includes weight decay (grad is NULL when flat_gradient is 0:
     * the algorithm applies weight decay itself). */
    kfac_status (*step)(kfac_optimizer *opt, float *theta, const float *grad, long t,
                        const kfac_step_ctx *ctx);
    /* Visit the state held in opt->ext for a checkpoint (checkpoint.h);
     * NULL when the state vectors are all there is. */
    void (*io)(kfac_optimizer *opt, struct kfac_ckio *io);
} kfac_optimizer_type;

extern const kfac_optimizer_type kfac_optimizer_types[KFAC_OPT_COUNT];

struct kfac_optimizer {
    const kfac_optimizer_type *type;
    kfac_optimizer_kind kind;
    kfac_optim_params p;
    size_t n;       /* parameters */
    long t;         /* steps taken */
    float *state[2]; /* state_vectors vectors of n floats (v; Adam: m, v) */
    void *ext;      /* attach's state (K-FAC) */
};

/* An optimizer for a network: the only way to create one whose type has
 * attach (K-FAC); first-order kinds work too. */
kfac_status kfac_optimizer_new_for_net(const kfac_train_params *tp, const kfac_net *net,
                                       kfac_optimizer **out);

/* The step the trainer takes: weight decay (when grad is given), then the
 * algorithm's update. */
kfac_status kfac_optimizer_step_ctx(kfac_optimizer *opt, float *theta, float *grad,
                                    const kfac_step_ctx *ctx);

/* The optimizer's state for a checkpoint (ckio.h): its kind, steps, state
 * vectors and its algorithm's own state. */
void kfac_optimizer_io(kfac_optimizer *opt, struct kfac_ckio *io);

#endif
