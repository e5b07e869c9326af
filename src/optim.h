/* optim.h - the optimizer object the trainer drives: one kind of the table
 * of optimizer types (optim_type.h), indexed by kfac_optimizer_kind, with
 * its parameters, step count and state. The public first-order API of
 * include/kfac.h is the same object without a network. */
#ifndef KFAC_OPTIM_H
#define KFAC_OPTIM_H

#include "optim_type.h"

/* Every kind's type; a row not filled in (an enum value added without its
 * implementation) is NULL and counts as unknown. */
extern const kfac_optimizer_type *const kfac_optimizer_types[KFAC_OPT_COUNT];

/* An optimizer for a network, from the whole training configuration: the
 * only way to create one whose type has state of its own (K-FAC);
 * first-order kinds work too. Its steps run over `group` (dist.h; NULL or
 * a group of one: alone), kept from here on: the one place a process
 * group is handed to the optimizer. */
struct kfac_dist;
kfac_status kfac_optimizer_new_for_net(const kfac_train_params *tp, const kfac_net *net,
                                       const struct kfac_dist *group, kfac_optimizer **out);

/* The step the trainer takes: weight decay (when grad is given), then the
 * algorithm's update. */
kfac_status kfac_optimizer_step_ctx(kfac_optimizer *opt, float *theta, float *grad,
                                    const kfac_step_ctx *ctx);

/* The learning-rate schedule's factor for the next steps (1 at first):
 * each step's learning rate is the optimizer's times it. */
void kfac_optimizer_set_lr_factor(kfac_optimizer *opt, float factor);

/* Whether the step reads the flat mean gradient (else the trainer skips
 * forming it). */
int kfac_optimizer_flat_gradient(const kfac_optimizer *opt);
/* Whether the next step reads every layer's abar (optim_type.h). */
int kfac_optimizer_keeps_inputs(const kfac_optimizer *opt);
/* The curvature counters and timings; KFAC_ERR_STATE for a type without
 * them. */
kfac_status kfac_optimizer_report(const kfac_optimizer *opt, kfac_kfac_stats *out);

/* State vector i of the type's state_vectors (NULL past them). */
const float *kfac_optimizer_state_vector(const kfac_optimizer *opt, int i);

/* The optimizer's state for a checkpoint (ckio.h): its kind, steps, state
 * vectors and its algorithm's own state. */
void kfac_optimizer_io(kfac_optimizer *opt, struct kfac_ckio *io);

#endif
