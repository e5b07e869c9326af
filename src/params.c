/* params.c - defaults and validation of the plain parameter structs. Each
 * field is checked before any work starts, with a message naming it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

void kfac_optim_params_init(kfac_optim_params *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof *p);
    p->lr = 0.01f;
    p->momentum = 0.9f;
    p->beta1 = 0.9f;
    p->beta2 = 0.999f;
    p->eps = 1e-8f;
    p->weight_decay = 0.0f;
}

/* lo < x <= hi (open_lo) or lo <= x <= hi; rejects NaN */
static int in_range(float x, float lo, float hi, int open_lo)
{
    if (!(x <= hi))
        return 0;
    return open_lo ? x > lo : x >= lo;
}

kfac_status kfac_optim_params_validate(const kfac_optim_params *p)
{
    if (!p)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "optimizer parameters are NULL");
    if (!in_range(p->lr, 0.0f, 1e3f, 1))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "learning rate %g outside (0, 1000]", p->lr);
    if (!in_range(p->momentum, 0.0f, 1.0f, 0) || p->momentum >= 1.0f)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "momentum %g outside [0, 1)", p->momentum);
    if (!in_range(p->beta1, 0.0f, 1.0f, 0) || p->beta1 >= 1.0f)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "beta1 %g outside [0, 1)", p->beta1);
    if (!in_range(p->beta2, 0.0f, 1.0f, 0) || p->beta2 >= 1.0f)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "beta2 %g outside [0, 1)", p->beta2);
    if (!in_range(p->eps, 0.0f, 1.0f, 1))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "eps %g outside (0, 1]", p->eps);
    if (!in_range(p->weight_decay, 0.0f, 1e3f, 0))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "weight decay %g outside [0, 1000]",
                         p->weight_decay);
    return KFAC_OK;
}

void kfac_train_params_init(kfac_train_params *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof *p);
    p->optimizer = KFAC_OPT_MOMENTUM;
    kfac_optim_params_init(&p->optim);
    p->batch = 128;
    p->epochs = 10;
    p->seed = 1;
    kfac_kfac_params_init(&p->kfac);
}

kfac_status kfac_train_params_validate(const kfac_train_params *p)
{
    if (!p)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "training parameters are NULL");
    if ((unsigned)p->optimizer >= KFAC_OPT_COUNT)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown optimizer %d", (int)p->optimizer);
    if (p->batch < 1 || p->batch > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "batch size %d outside [1, 1000000]", p->batch);
    if (p->epochs < 1 || p->epochs > 100000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "epochs %d outside [1, 100000]", p->epochs);
    kfac_status st = kfac_optim_params_validate(&p->optim);
    return st != KFAC_OK ? st : kfac_kfac_params_validate(&p->kfac);
}

/* ---- K-FAC (defaults: docs/algorithm.md §3-5 and KFAC-Pytorch's T_cov, T_inv, c) */

void kfac_kfac_params_init(kfac_kfac_params *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof *p);
    /* best of 1e-3 .. 1 on nets/fmnist-mlp (bench/README.md); the factored
     * form adds sqrt(lambda)-sized terms to each factor */
    p->damping = 0.1f;
    p->decay = 0.95f;
    p->cov_every = 10;
    p->inv_every = 100;
    p->stat_fraction = 1.0f;
    p->fisher = KFAC_FISHER_SAMPLED;
    p->inversion = KFAC_INV_LOWRANK;
    p->rule = KFAC_RULE_KL_CLIP;
    p->kl_clip = 1e-3f;
    p->lm_every = 5;
    p->lr = 0.0f;        /* 0: the [train] learning rate */
    p->momentum = -1.0f; /* negative: the [train] momentum */
    /* a cap, not a target: on nets/fmnist-mlp no factor keeps more than
     * about 20 pairs at damping 0.1 (docs/algorithm.md §4.4) */
    p->rank_max = 64;
    /* the whole batch: on fmnist-mlp a quarter made the F products 2x
     * cheaper but the loss after 3 epochs 0.288 against 0.229, worse per
     * second too (bench/README.md) */
    p->fvp_fraction = 1.0f;
}

kfac_status kfac_kfac_params_validate(const kfac_kfac_params *p)
{
    if (!p)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "K-FAC parameters are NULL");
    if (!in_range(p->damping, 0.0f, 1e6f, 1))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "damping %g outside (0, 1e6]", p->damping);
    if (!in_range(p->decay, 0.0f, 1.0f, 0) || p->decay >= 1.0f)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "decay %g outside [0, 1)", p->decay);
    if (p->cov_every < 1 || p->cov_every > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "cov_every %d outside [1, 1000000]", p->cov_every);
    if (p->inv_every < 1 || p->inv_every > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "inv_every %d outside [1, 1000000]", p->inv_every);
    if (!in_range(p->stat_fraction, 0.0f, 1.0f, 1))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "stat_fraction %g outside (0, 1]", p->stat_fraction);
    if ((unsigned)p->fisher >= KFAC_FISHER_COUNT)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown Fisher kind %d", (int)p->fisher);
    if ((unsigned)p->inversion >= KFAC_INV_COUNT)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown inversion %d", (int)p->inversion);
    if ((unsigned)p->rule >= KFAC_RULE_COUNT)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown step rule %d", (int)p->rule);
    if (!in_range(p->kl_clip, 0.0f, 1e6f, 1))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kl_clip %g outside (0, 1e6]", p->kl_clip);
    if (p->lm_every < 1 || p->lm_every > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "lm_every %d outside [1, 1000000]", p->lm_every);
    if (!in_range(p->lr, 0.0f, 1e3f, 0))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "K-FAC lr %g outside [0, 1000]", p->lr);
    if (!in_range(p->momentum, -1.0f, 1.0f, 0) || p->momentum >= 1.0f)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "K-FAC momentum %g outside [-1, 1)", p->momentum);
    if (!in_range(p->fvp_fraction, 0.0f, 1.0f, 1))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "fvp_fraction %g outside (0, 1]", p->fvp_fraction);
    if (p->rank_max < 1 || p->rank_max > 4096)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "rank_max %d outside [1, 4096]", p->rank_max);
    return KFAC_OK;
}

/* Name tables of the K-FAC enums, shared by the net-file parser, the
 * command line and messages. */
static const char *const fisher_names[KFAC_FISHER_COUNT] = {"sampled", "empirical"};
static const char *const inversion_names[KFAC_INV_COUNT] = {"cholesky", "eigen", "lowrank"};
static const char *const rule_names[KFAC_RULE_COUNT] = {"kl_clip", "quadratic"};

KFAC_NAMED_ENUM(kfac_fisher_kind, kfac_fisher, fisher_names[k], KFAC_FISHER_COUNT, "Fisher kind")
KFAC_NAMED_ENUM(kfac_inversion, kfac_inversion, inversion_names[k], KFAC_INV_COUNT, "inversion")
KFAC_NAMED_ENUM(kfac_step_rule, kfac_step_rule, rule_names[k], KFAC_RULE_COUNT, "step rule")
