/* kfac_opt.h - K-FAC as a row of the optimizer table (optim.h): the
 * engine of precond.h driven from a kfac_net. */
#ifndef KFAC_KFAC_OPT_H
#define KFAC_KFAC_OPT_H

#include "optim.h"

kfac_status kfac_opt_attach(kfac_optimizer *opt, const kfac_net *net, const kfac_kfac_params *kp);
void kfac_opt_detach(kfac_optimizer *opt);
kfac_status kfac_opt_step(kfac_optimizer *opt, float *theta, const float *grad, long t,
                          const kfac_step_ctx *ctx);
/* Steps over a process group (dist.h; NULL: alone). */
struct kfac_dist;
void kfac_opt_set_dist(kfac_optimizer *opt, const struct kfac_dist *dist);
/* Counters and timings so far. */
void kfac_opt_stats(const kfac_optimizer *opt, kfac_kfac_stats *out);
/* The engine's state, for checkpoints. */
void kfac_opt_io(kfac_optimizer *opt, struct kfac_ckio *io);

#endif
