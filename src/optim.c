/* optim.c - the first-order optimizers (SGD, heavy-ball momentum, Nesterov,
 * Adam) as optimizer types (docs/algorithm.md §11; PyTorch's torch.optim
 * conventions), the table of every kind's type, and the optimizer object
 * that owns their parameters, step count and state. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckio.h"
#include "common.h"
#include "kfac_opt.h"
#include "optim.h"

static kfac_status sgd_step(void *state, const kfac_step_args *a, const kfac_step_ctx *ctx)
{
    (void)state, (void)ctx;
    const size_t n = a->n;
    const float lr = a->lr;
    float *restrict theta = a->theta;
    const float *restrict grad = a->grad;
    /* theta <- theta - lr g */
#pragma omp parallel for simd schedule(static) if (n > KFAC_PAR_STREAM)
    for (size_t i = 0; i < n; i++)
        theta[i] -= lr * grad[i];
    return KFAC_OK;
}

static kfac_status momentum_step(void *state, const kfac_step_args *a, const kfac_step_ctx *ctx)
{
    (void)state, (void)ctx;
    const size_t n = a->n;
    const float lr = a->lr, mu = a->p->momentum;
    float *restrict theta = a->theta, *restrict v = a->vec[0];
    const float *restrict grad = a->grad;
    /* v <- mu v + g; theta <- theta - lr v (PyTorch's form without
     * dampening: zero initial v makes the first step v = g, as there) */
#pragma omp parallel for simd schedule(static) if (n > KFAC_PAR_STREAM)
    for (size_t i = 0; i < n; i++) {
        float vi = mu * v[i] + grad[i];
        v[i] = vi;
        theta[i] -= lr * vi;
    }
    return KFAC_OK;
}

static kfac_status nesterov_step(void *state, const kfac_step_args *a, const kfac_step_ctx *ctx)
{
    (void)state, (void)ctx;
    const size_t n = a->n;
    const float lr = a->lr, mu = a->p->momentum;
    float *restrict theta = a->theta, *restrict v = a->vec[0];
    const float *restrict grad = a->grad;
    /* v <- mu v + g; theta <- theta - lr (g + mu v): PyTorch's Nesterov,
     * which looks ahead along the updated velocity without a second
     * gradient evaluation */
#pragma omp parallel for simd schedule(static) if (n > KFAC_PAR_STREAM)
    for (size_t i = 0; i < n; i++) {
        float gi = grad[i];
        float vi = mu * v[i] + gi;
        v[i] = vi;
        theta[i] -= lr * (gi + mu * vi);
    }
    return KFAC_OK;
}

static kfac_status adam_step(void *state, const kfac_step_args *a, const kfac_step_ctx *ctx)
{
    (void)state, (void)ctx;
    const size_t n = a->n;
    const long t = a->t;
    const float b1 = a->p->beta1, b2 = a->p->beta2, eps = a->p->eps;
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    float *restrict theta = a->theta, *restrict m = a->vec[0], *restrict v = a->vec[1];
    const float *restrict grad = a->grad;
    /* Bias corrections 1 - beta^t in double, once per step: in float,
     * 1 - 0.999^t loses most of its digits for small t, and pow per
     * element would cost more than the whole update. As in PyTorch,
     * theta -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), which is
     * lr mhat / (sqrt(vhat) + eps) with mhat = m / bc1, vhat = v / bc2. */
    const double bc1 = 1.0 - pow((double)b1, (double)t);
    const double bc2 = 1.0 - pow((double)b2, (double)t);
    const float step = (float)((double)a->lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    /* sqrtf vectorises only under -fno-math-errno (otherwise GCC keeps a
     * branch to set errno for negative input, which v never is); with it
     * this loop runs about 4x faster. */
#pragma omp parallel for simd schedule(static) if (n > KFAC_PAR_ADAM)
    for (size_t i = 0; i < n; i++) {
        float gi = grad[i];
        float mi = b1 * m[i] + c1 * gi;        /* m <- b1 m + (1-b1) g */
        float vi = b2 * v[i] + c2 * gi * gi;   /* v <- b2 v + (1-b2) g^2 */
        m[i] = mi;
        v[i] = vi;
        theta[i] -= step * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
    return KFAC_OK;
}

static const kfac_optimizer_type sgd_type = {.flat_gradient = 1, .step = sgd_step};
static const kfac_optimizer_type momentum_type = {.state_vectors = 1, .flat_gradient = 1, .step = momentum_step};
static const kfac_optimizer_type nesterov_type = {.state_vectors = 1, .flat_gradient = 1, .step = nesterov_step};
static const kfac_optimizer_type adam_type = {.state_vectors = 2, .flat_gradient = 1, .step = adam_step};

const kfac_optimizer_type *const kfac_optimizer_types[KFAC_OPT_COUNT] = {
    [KFAC_OPT_SGD] = &sgd_type,
    [KFAC_OPT_MOMENTUM] = &momentum_type,
    [KFAC_OPT_NESTEROV] = &nesterov_type,
    [KFAC_OPT_ADAM] = &adam_type,
    [KFAC_OPT_KFAC] = &kfac_kfac_type, /* its momentum lives in its own state */
};

struct kfac_optimizer {
    const kfac_optimizer_type *type;
    kfac_optimizer_kind kind;
    kfac_optim_params p;
    size_t n;        /* parameters */
    long t;          /* steps taken */
    float *state[2]; /* the type's state_vectors vectors of n floats */
    void *own;       /* the type's own state (alloc), else NULL */
    float lr_factor; /* the schedule's, for the next steps; 1 */
};

static const kfac_optimizer_type *type_of(kfac_optimizer_kind k)
{
    return (unsigned)k < KFAC_OPT_COUNT ? kfac_optimizer_types[k] : NULL;
}


void kfac_optimizer_free(kfac_optimizer *opt)
{
    if (!opt)
        return;
    if (opt->own && opt->type->free)
        opt->type->free(opt->own);
    for (int i = 0; i < 2; i++)
        kfac_free_floats(opt->state[i]);
    free(opt);
}

static kfac_status optimizer_alloc(kfac_optimizer_kind kind, const kfac_optim_params *p, size_t n_params,
                                   kfac_optimizer **out)
{
    const kfac_optimizer_type *type = type_of(kind);
    kfac_optim_params defaults;
    if (!p) {
        kfac_optim_params_init(&defaults);
        p = &defaults;
    }
    kfac_status s = kfac_optim_params_validate(p);
    if (s != KFAC_OK)
        return s;
    if (n_params < 1 || n_params > SIZE_MAX / 2 / sizeof(float))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "optimizer: %zu parameters", n_params);

    kfac_optimizer *opt = calloc(1, sizeof *opt);
    if (!opt)
        return kfac_fail(KFAC_ERR_NOMEM, "optimizer: out of memory");
    opt->type = type;
    opt->kind = kind;
    opt->p = *p;
    opt->n = n_params;
    opt->t = 0;
    opt->lr_factor = 1.0f;
    size_t bytes = n_params * sizeof(float);
    for (int i = 0; i < type->state_vectors && i < 2; i++) {
        if (!(opt->state[i] = kfac_alloc_floats(n_params))) {
            kfac_optimizer_free(opt);
            return kfac_fail(KFAC_ERR_NOMEM, "optimizer: cannot allocate %zu bytes of state",
                             bytes);
        }
        memset(opt->state[i], 0, bytes);
    }
    *out = opt;
    return KFAC_OK;
}

kfac_status kfac_optimizer_new(kfac_optimizer_kind kind, const kfac_optim_params *p,
                               size_t n_params, kfac_optimizer **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_optimizer_new: out is NULL");
    const kfac_optimizer_type *type = type_of(kind);
    if (!type)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown optimizer kind %d", (int)kind);
    if (type->alloc)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "optimizer %s needs a network: use a kfac_trainer",
                         kfac_optimizer_name(kind));
    return optimizer_alloc(kind, p, n_params, out);
}

kfac_status kfac_optimizer_new_for_net(const kfac_train_params *tp, const kfac_net *net,
                                       const struct kfac_dist *group, kfac_optimizer **out)
{
    kfac_clear_error();
    if (!out || !tp || !net)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_optimizer_new_for_net: NULL argument");
    const kfac_optimizer_type *type = type_of(tp->optimizer);
    if (!type)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown optimizer kind %d", (int)tp->optimizer);
    /* [train]'s settings with this optimizer's own section over them */
    kfac_optim_params op;
    kfac_train_params_resolve(tp, &op);
    kfac_status s = optimizer_alloc(tp->optimizer, &op, kfac_net_n_params(net), out);
    if (s == KFAC_OK && type->alloc && (s = type->alloc(net, tp, group, &(*out)->own)) != KFAC_OK) {
        kfac_optimizer_free(*out);
        *out = NULL;
    }
    return s;
}

kfac_status kfac_optimizer_step_ctx(kfac_optimizer *opt, float *theta, float *grad,
                                    const kfac_step_ctx *ctx)
{
    if (!opt || !theta || (!grad && opt->type->flat_gradient))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "optimizer step: NULL argument");
    if (opt->type->alloc && (!opt->own || !ctx))
        return kfac_fail(KFAC_ERR_STATE, "optimizer %s steps need its network", kfac_optimizer_name(opt->kind));
    const size_t n = opt->n;
    const float wd = opt->p.weight_decay;
    /* Coupled L2 (PyTorch's weight_decay): g <- g + wd theta, in place so
     * a curvature-aware step sees the same gradient. A separate pass only
     * when decay is on; it cannot be folded into the rows' loops because
     * they take grad as already decayed. */
    if (wd != 0.0f && grad) {
#pragma omp parallel for simd schedule(static) if (n > KFAC_PAR_STREAM)
        for (size_t i = 0; i < n; i++)
            grad[i] += wd * theta[i];
    }
    /* t counts the steps actually taken */
    long t = opt->t + 1;
    kfac_step_args a = {&opt->p, n, theta, grad, opt->state, t, opt->p.lr * opt->lr_factor};
    kfac_status s = opt->type->step(opt->own, &a, ctx);
    if (s == KFAC_OK)
        opt->t = t;
    return s;
}

kfac_status kfac_optimizer_step(kfac_optimizer *opt, float *theta, float *grad)
{
    return kfac_optimizer_step_ctx(opt, theta, grad, NULL);
}

long kfac_optimizer_steps(const kfac_optimizer *opt) { return opt ? opt->t : 0; }

kfac_optimizer_kind kfac_optimizer_get_kind(const kfac_optimizer *opt)
{
    return opt ? opt->kind : KFAC_OPT_COUNT;
}

void kfac_optimizer_io(kfac_optimizer *opt, kfac_ckio *io)
{
    kfac_ckio_expect(io, (uint64_t)opt->kind, "optimizer kind");
    kfac_ckio_long(io, &opt->t);
    for (int i = 0; i < opt->type->state_vectors && i < 2; i++)
        kfac_ckio_floats(io, opt->state[i], opt->n, "optimizer state vector");
    if (opt->type->io)
        opt->type->io(opt->own, io);
}

const float *kfac_optimizer_state_vector(const kfac_optimizer *opt, int i)
{
    return i >= 0 && i < opt->type->state_vectors && i < 2 ? opt->state[i] : NULL;
}

void kfac_optimizer_set_lr_factor(kfac_optimizer *opt, float factor) { opt->lr_factor = factor; }

int kfac_optimizer_flat_gradient(const kfac_optimizer *opt) { return opt->type->flat_gradient; }

int kfac_optimizer_keeps_inputs(const kfac_optimizer *opt)
{
    return opt->type->keeps_inputs ? opt->type->keeps_inputs(opt->own) : !opt->type->flat_gradient;
}

kfac_status kfac_optimizer_report(const kfac_optimizer *opt, kfac_kfac_stats *out)
{
    if (!opt->type->report)
        return kfac_fail(KFAC_ERR_STATE, "optimizer %s keeps no curvature statistics (K-FAC does)",
                         kfac_optimizer_name(opt->kind));
    opt->type->report(opt->own, out);
    return KFAC_OK;
}
