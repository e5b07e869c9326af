/* train.h - the trainer's private side: what the checkpoints (checkpoint.c)
 * and the process group need of it beyond include/kfac.h. */
#ifndef KFAC_TRAIN_H
#define KFAC_TRAIN_H

#include "kfac.h"

struct kfac_ckio;

/* The trainer's state for a checkpoint (ckio.h): the weights, the
 * optimizer's state, progress, generator and data order. */
void kfac_trainer_io(kfac_trainer *t, struct kfac_ckio *io);
kfac_optimizer_kind kfac_trainer_optimizer(const kfac_trainer *t);
/* The learning-rate schedule's factor for step t (0-based, over the whole
 * run of p->epochs epochs of steps_per_epoch steps): docs/algorithm.md
 * §11.1. 1 for the constant schedule without warm-up. */
double kfac_lr_factor(const kfac_train_params *p, long t, long steps_per_epoch);

/* In a process group: every rank's status of a step all must take or skip
 * together (the worst of them); alone: st. Collective. */
kfac_status kfac_trainer_agree(kfac_trainer *t, kfac_status st);

#endif
