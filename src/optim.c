/* optim.c - the first-order optimizers (SGD, heavy-ball momentum, Nesterov,
 * Adam) as rows of the const type table, and the optimizer object that
 * owns their state. Updates follow PyTorch's torch.optim conventions. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckio.h"
#include "common.h"
#include "kfac_opt.h"
#include "optim.h"

static kfac_status sgd_step(kfac_optimizer *opt, float *restrict theta,
                            const float *restrict grad, long t, const kfac_step_ctx *ctx)
{
    (void)t, (void)ctx;
    const size_t n = opt->n;
    const float lr = opt->p.lr;
    /* theta <- theta - lr g */
#pragma omp parallel for simd schedule(static) if (n > KFAC_PAR_STREAM)
    for (size_t i = 0; i < n; i++)
        theta[i] -= lr * grad[i];
    return KFAC_OK;
}

static kfac_status momentum_step(kfac_optimizer *opt, float *restrict theta,
                                 const float *restrict grad, long t, const kfac_step_ctx *ctx)
{
    (void)t, (void)ctx;
    const size_t n = opt->n;
    const float lr = opt->p.lr, mu = opt->p.momentum;
    float *restrict v = opt->state[0];
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

static kfac_status nesterov_step(kfac_optimizer *opt, float *restrict theta,
                                 const float *restrict grad, long t, const kfac_step_ctx *ctx)
{
    (void)t, (void)ctx;
    const size_t n = opt->n;
    const float lr = opt->p.lr, mu = opt->p.momentum;
    float *restrict v = opt->state[0];
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

static kfac_status adam_step(kfac_optimizer *opt, float *restrict theta,
                             const float *restrict grad, long t, const kfac_step_ctx *ctx)
{
    (void)ctx;
    const size_t n = opt->n;
    const float b1 = opt->p.beta1, b2 = opt->p.beta2, eps = opt->p.eps;
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    float *restrict m = opt->state[0];
    float *restrict v = opt->state[1];
    /* Bias corrections 1 - beta^t in double, once per step: in float,
     * 1 - 0.999^t loses most of its digits for small t, and pow per
     * element would cost more than the whole update. As in PyTorch,
     * theta -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), which is
     * lr mhat / (sqrt(vhat) + eps) with mhat = m / bc1, vhat = v / bc2. */
    const double bc1 = 1.0 - pow((double)b1, (double)t);
    const double bc2 = 1.0 - pow((double)b2, (double)t);
    const float step = (float)((double)opt->p.lr / bc1);
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

const kfac_optimizer_type kfac_optimizer_types[KFAC_OPT_COUNT] = {
    [KFAC_OPT_SGD] = {"sgd", 0, 1, NULL, NULL, sgd_step, NULL},
    [KFAC_OPT_MOMENTUM] = {"momentum", 1, 1, NULL, NULL, momentum_step, NULL},
    [KFAC_OPT_NESTEROV] = {"nesterov", 1, 1, NULL, NULL, nesterov_step, NULL},
    [KFAC_OPT_ADAM] = {"adam", 2, 1, NULL, NULL, adam_step, NULL},
    /* K-FAC's momentum (or previous update) lives in its engine */
    [KFAC_OPT_KFAC] = {"kfac", 0, 0, kfac_opt_attach, kfac_opt_detach, kfac_opt_step, kfac_opt_io},
};

/* A kind whose row was not filled in (an enum value added without its
 * implementation) has no step; treat it as unknown rather than crash. */
static const kfac_optimizer_type *type_of(kfac_optimizer_kind k)
{
    if ((unsigned)k >= KFAC_OPT_COUNT || !kfac_optimizer_types[k].step)
        return NULL;
    return &kfac_optimizer_types[k];
}

/* (a row not filled in has no name: unknown, like the kinds past the end) */
KFAC_NAMED_ENUM(kfac_optimizer_kind, kfac_optimizer, kfac_optimizer_types, KFAC_OPT_COUNT, "optimizer")

void kfac_optimizer_free(kfac_optimizer *opt)
{
    if (!opt)
        return;
    if (opt->ext && opt->type->detach)
        opt->type->detach(opt);
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
    if (type->attach)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "optimizer %s needs a network: use a kfac_trainer",
                         type->name);
    return optimizer_alloc(kind, p, n_params, out);
}

kfac_status kfac_optimizer_new_for_net(const kfac_train_params *tp, const kfac_net *net,
                                       kfac_optimizer **out)
{
    kfac_clear_error();
    if (!out || !tp || !net)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_optimizer_new_for_net: NULL argument");
    const kfac_optimizer_type *type = type_of(tp->optimizer);
    if (!type)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown optimizer kind %d", (int)tp->optimizer);
    kfac_status s = optimizer_alloc(tp->optimizer, &tp->optim, kfac_net_n_params(net), out);
    if (s == KFAC_OK && type->attach && (s = type->attach(*out, net, &tp->kfac)) != KFAC_OK) {
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
    if (opt->type->attach && (!opt->ext || !ctx))
        return kfac_fail(KFAC_ERR_STATE, "optimizer %s steps need its network", opt->type->name);
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
    kfac_status s = opt->type->step(opt, theta, grad, t, ctx);
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
        opt->type->io(opt, io);
}
