/* precond.h - the K-FAC step engine behind the public kfac_precond: the
 * statistics and inversion schedule, the preconditioned direction and the
 * two step rules, over per-layer arrays. The built-in optimizer
 * (kfac_opt.c) drives the same engine through the fuller input below, which
 * also lets it skip forming gradients that the low-rank form never needs. */
#ifndef KFAC_PRECOND_H
#define KFAC_PRECOND_H

#include "kfac.h"

/* One step's input; arrays hold n_layers pointers. */
typedef struct kfac_precond_input {
    int rows;                     /* B */
    float *const *w;              /* W_l, updated */
    const float *const *grad;     /* mean gradients, or NULL: formed from
                                     abar and gtrue (or the low-rank form) */
    const float *const *abar;     /* rows x d_in (statistics; grad NULL) */
    const float *const *gtrue;    /* rows x d_out of the labels (grad NULL) */
    const float *const *layer_grad; /* with grad NULL: NULL, or per layer NULL
                                     or its gradient, (1/total_rows) times
                                     the sum over this process's rows, where
                                     abar was not kept (a convolution's
                                     between statistics rounds): read in
                                     place of abar and gtrue */
    const float *const *gstat;    /* stat_rows x d_out (statistics due) */
    int stat_rows;                /* may be 0 in a process group */
    int total_rows;               /* rows of the whole group's batch: the
                                     statistics, gradients, F v and losses
                                     are means over them (alone: rows) */
    int total_stat_rows;          /* the group's stat_rows (alone: stat_rows) */
    double loss0;                 /* QUADRATIC: the batch loss now (of the
                                     process's rows) */
    int fvp_rows;                 /* QUADRATIC: rows the F v callback
                                     averages over (may be 0 in a group) */
    int total_fvp_rows;           /* the group's fvp_rows (alone: fvp_rows) */
} kfac_precond_input;

/* The step of kfac_precond_step, arguments already checked. */
kfac_status kfac_precond_step_input(kfac_precond *pc, const kfac_precond_input *in);

/* kfac_precond_new for data-parallel steps in a process group (dist.h;
 * NULL or a group of one: alone), given once: the group may join a
 * communicator later (kfac_dist_take); positions as in
 * kfac_precond_new_positions (NULL: 1 each). In a group every rank passes its
 * share of the batch, grad NULL. */
struct kfac_dist;
kfac_status kfac_precond_new_in_group(int n_layers, const int *d_in, const int *d_out, const int *positions,
                                      int max_rows,
                                      const kfac_optim_params *op, const kfac_kfac_params *kp,
                                      const struct kfac_dist *group, kfac_precond **out);

/* The running counters, for a caller that adds its own timings (the
 * built-in optimizer's sampled-target pass). */
kfac_kfac_stats *kfac_precond_stats_ref(kfac_precond *pc);

/* The engine's state for a checkpoint (ckio.h): settings, counters,
 * damping, momentum and the factors. */
struct kfac_ckio;
void kfac_precond_io(kfac_precond *pc, struct kfac_ckio *io);

#endif
