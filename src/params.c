/* params.c - defaults and validation of the plain parameter structs. Each
 * field is checked before any work starts, with a message naming it. */
#include <math.h>
#include <string.h>

#include "common.h"

void kfac_optim_params_init(kfac_optim_params *p)
{
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
    memset(p, 0, sizeof *p);
    p->optimizer = KFAC_OPT_MOMENTUM;
    kfac_optim_params_init(&p->optim);
    p->batch = 128;
    p->epochs = 10;
    p->seed = 1;
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
    return kfac_optim_params_validate(&p->optim);
}
