/* kfac_opt.c - the K-FAC optimizer on a kfac_net (KFAC.md 3-6): when to
 * take factor statistics and invert, targets sampled from the model for G,
 * the preconditioned direction, and the two step rules (KL-clipped
 * momentum; the quadratic model with exact Fisher-vector products and
 * Levenberg-Marquardt damping). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "fisher.h"
#include "kfac_opt.h"
#include "loss.h"
#include "net.h"
#include "precond.h"

typedef struct kfac_state {
    kfac_kfac_params kp;
    kfac_precond *pc;
    kfac_fisher *fisher; /* QUADRATIC only */
    float *delta;        /* n_params: +F^-1 grad, the preconditioned gradient */
    float *grad;         /* n_params: gradient of layers that need it formed */
    float *fv, *fv0;     /* n_params: F delta and F delta0 (QUADRATIC) */
    float *gsave;        /* max_batch x d_out per layer: the true g while the
                            sampled-target pass overwrites the net's */
    float *ysample;      /* max_batch x outputs: targets drawn from the model */
    double lambda;       /* current damping */
    kfac_kfac_stats st;
} kfac_state;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void kfac_opt_detach(kfac_optimizer *opt)
{
    kfac_state *s = opt->ext;
    if (!s)
        return;
    kfac_precond_free(s->pc);
    kfac_fisher_free(s->fisher);
    kfac_free_floats(s->delta), kfac_free_floats(s->grad);
    kfac_free_floats(s->fv), kfac_free_floats(s->fv0);
    kfac_free_floats(s->gsave), kfac_free_floats(s->ysample);
    free(s);
    opt->ext = NULL;
}

kfac_status kfac_opt_attach(kfac_optimizer *opt, const kfac_net *net, const kfac_kfac_params *kp)
{
    kfac_status st = kfac_kfac_params_validate(kp);
    if (st != KFAC_OK)
        return st;
    kfac_state *s = calloc(1, sizeof *s);
    if (!s)
        return kfac_fail(KFAC_ERR_NOMEM, "K-FAC: out of memory");
    opt->ext = s;
    s->kp = *kp;
    s->lambda = kp->damping;
    /* [kfac] lr and momentum: K-FAC's own, beside the baseline's */
    if (kp->lr > 0.0f)
        opt->p.lr = kp->lr;
    if (kp->momentum >= 0.0f)
        opt->p.momentum = kp->momentum;
    int L = net->n_layers, d_in[KFAC_MAX_LAYERS], d_out[KFAC_MAX_LAYERS];
    size_t g_total = 0;
    for (int l = 0; l < L; l++) {
        d_in[l] = net->dims[l] + 1;
        d_out[l] = net->dims[l + 1];
        g_total += (size_t)net->max_batch * (size_t)d_out[l];
    }
    if ((st = kfac_precond_new(L, d_in, d_out, net->max_batch, kp, &s->pc)) != KFAC_OK)
        goto fail;
    int quad = kp->rule == KFAC_RULE_QUADRATIC;
    if (!(s->delta = kfac_alloc_floats(net->n_params)) || !(s->grad = kfac_alloc_floats(net->n_params)) ||
        !(s->gsave = kfac_alloc_floats(g_total)) ||
        !(s->ysample = kfac_alloc_floats((size_t)net->max_batch * (size_t)net->dims[L])) ||
        (quad && (!(s->fv = kfac_alloc_floats(net->n_params)) || !(s->fv0 = kfac_alloc_floats(net->n_params))))) {
        st = kfac_fail(KFAC_ERR_NOMEM, "K-FAC buffers: out of memory");
        goto fail;
    }
    if (quad && (st = kfac_fisher_new(net, &s->fisher)) != KFAC_OK)
        goto fail;
    return KFAC_OK;
fail:
    kfac_opt_detach(opt);
    return st;
}

void kfac_opt_stats(const kfac_optimizer *opt, kfac_kfac_stats *out)
{
    const kfac_state *s = opt->ext;
    *out = s->st;
    out->damping = s->lambda;
}

/* Factor statistics (KFAC.md 3): A from the recorded abar, G from the g of
 * targets sampled from the model (one extra backward pass) or, for the
 * empirical Fisher, of the training labels. gtrue gets each layer's g of
 * the training labels, which the direction needs. */
static kfac_status take_stats(kfac_state *s, kfac_net *net, kfac_rng *rng, const float **gtrue)
{
    int B = net->batch, L = net->n_layers, dL = net->dims[L];
    int m = (int)ceil((double)s->kp.stat_fraction * B);
    m = KFAC_MAX(1, KFAC_MIN(m, B));
    kfac_status st;
    if (s->kp.fisher == KFAC_FISHER_SAMPLED) {
        float *save = s->gsave;
        for (int l = 0; l < L; l++) {
            size_t n = (size_t)B * (size_t)net->dims[l + 1];
            memcpy(save, net->g[l], sizeof(float) * n);
            gtrue[l] = save;
            save += (size_t)net->max_batch * (size_t)net->dims[l + 1];
        }
        /* y ~ p(y | x, theta) for the first m rows, back-propagated alone */
        kfac_loss_types[net->spec.loss].sample(net->z, s->ysample, m, dL, rng);
        net->batch = m;
        st = kfac_net_backward(net, s->ysample, NULL);
        net->batch = B;
        if (st != KFAC_OK)
            return st;
    } else {
        for (int l = 0; l < L; l++)
            gtrue[l] = net->g[l];
    }
    kfac_precond_begin_stats(s->pc);
    for (int l = 0; l < L; l++)
        if ((st = kfac_precond_accumulate(s->pc, l, net->abar[l], net->dims[l] + 1, net->g[l], m)) != KFAC_OK)
            return st;
    s->st.stats_rounds++;
    return KFAC_OK;
}

static kfac_status invert(kfac_state *s, double damping)
{
    kfac_invert_report rep;
    kfac_status st = kfac_precond_invert(s->pc, damping, &rep);
    if (st == KFAC_OK) {
        s->st.inversions++;
        s->st.fallbacks |= rep.fallbacks;
    }
    return st;
}

/* delta <- F_kfac^-1 (grad + wd theta) layer by layer, in the cheaper of the
 * low-rank and full forms (KFAC.md 8); *vg <- <delta, grad + wd theta>.
 * With need_grad the flat gradient is also formed in s->grad. */
static kfac_status direction(kfac_state *s, kfac_net *net, const float **gtrue, float wd, int need_grad,
                             double *vg)
{
    int B = net->batch;
    double total = 0.0;
    for (int l = 0; l < net->n_layers; l++) {
        int din = net->dims[l] + 1, dout = net->dims[l + 1];
        size_t off = net->offset[l], n = (size_t)din * dout;
        float *d = s->delta + off, *gl = s->grad + off;
        /* the low-rank form works from g and abar, so not with decay */
        int lowrank = wd == 0.0f && kfac_precond_lowrank_pays(s->pc, l, B);
        kfac_status st;
        if (need_grad || !lowrank) {
            /* grad_l (dout x din) <- (1/B) g^T (dout x B) abar (B x din) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, B, 1.0f / B, gtrue[l], dout,
                        net->abar[l], din, 0.0f, gl, din);
            if (wd != 0.0f)
                cblas_saxpy((int)n, wd, net->theta + off, 1, gl, 1); /* grad_l += wd W_l (KFAC.md 5) */
        }
        if (lowrank) {
            double dot;
            if ((st = kfac_precond_apply_lowrank(s->pc, l, net->abar[l], din, gtrue[l], B, d, &dot)) != KFAC_OK)
                return st;
            total += dot;
        } else {
            if ((st = kfac_precond_apply(s->pc, l, gl, d)) != KFAC_OK)
                return st;
            total += cblas_dsdot((int)n, d, 1, gl, 1);
        }
    }
    *vg = total;
    return KFAC_OK;
}

/* KFAC.md 5.1: nu = min(1, sqrt(c / (lr^2 <delta, grad>))); v <- mu v +
 * nu delta; theta <- theta - lr v. */
static void kl_clip_update(kfac_optimizer *opt, kfac_state *s, float *theta, double vg)
{
    double lr = opt->p.lr;
    double nu = vg > 0.0 ? fmin(1.0, sqrt(s->kp.kl_clip / (lr * lr * vg))) : 1.0;
    s->st.nu = nu;
    float fnu = (float)nu, flr = opt->p.lr, mu = opt->p.momentum;
    float *v = opt->state[0];
    const float *delta = s->delta;
    size_t n = opt->n;
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float vi = mu * v[i] + fnu * delta[i];
        v[i] = vi;
        theta[i] -= flr * vi;
    }
}

static double dot(const float *a, const float *b, size_t n) { return cblas_dsdot((int)n, a, 1, b, 1); }

/* KFAC.md 5.2-5.3: delta_new = alpha D + mu delta0 with D = -delta the
 * K-FAC descent direction, alpha and mu minimising the quadratic model
 * with C = F + (lambda + wd) I and exact F products on this batch; every
 * lm_every steps lambda follows the reduction ratio rho. A model that
 * promises more than the loss is damped more; a step whose loss is not
 * finite is undone. */
static kfac_status quadratic_update(kfac_optimizer *opt, kfac_state *s, kfac_net *net, const float *y,
                                    float *theta, long t, double vg, double h0)
{
    size_t n = opt->n;
    float *d0 = opt->state[0]; /* the previous update */
    double t0 = now();
    kfac_status st = kfac_fisher_vec(s->fisher, net, s->delta, s->fv);
    double d0norm = dot(d0, d0, n);
    int has_prev = t > 1 && d0norm > 0.0;
    if (st == KFAC_OK && has_prev)
        st = kfac_fisher_vec(s->fisher, net, d0, s->fv0);
    s->st.seconds_fvp += now() - t0;
    if (st != KFAC_OK)
        return st;
    /* with D = -delta: the F parts and the plain parts of D^T C D, D^T C d0,
     * d0^T C d0, and grad^T D, grad^T d0 */
    double dFd = dot(s->delta, s->fv, n), dd = dot(s->delta, s->delta, n), b1 = -vg;
    double dFd0 = 0.0, dd0 = 0.0, d0Fd0 = 0.0, b2 = 0.0;
    if (has_prev) {
        dFd0 = dot(s->delta, s->fv0, n);
        dd0 = dot(s->delta, d0, n);
        d0Fd0 = dot(d0, s->fv0, n);
        b2 = dot(s->grad, d0, n);
    }
    double alpha = 0.0, mu = 0.0, model = 0.0;
    for (int tries = 0;; tries++) {
        double c = s->lambda + opt->p.weight_decay;
        double a11 = dFd + c * dd, a12 = -(dFd0 + c * dd0), a22 = d0Fd0 + c * d0norm;
        double det = a11 * a22 - a12 * a12;
        mu = 0.0;
        if (has_prev && det > 1e-12 * fabs(a11 * a22)) {
            /* [a11 a12; a12 a22] [alpha; mu] = -[b1; b2] */
            alpha = (-b1 * a22 + b2 * a12) / det;
            mu = (-b2 * a11 + b1 * a12) / det;
        } else {
            alpha = -b1 / a11;
        }
        /* M(delta) - M(0) = 1/2 grad^T delta at the model's minimum. Our
         * losses are >= 0, so a model promising more than h0 is wrong:
         * more damping (the F products are reused) */
        model = 0.5 * (alpha * b1 + mu * b2);
        if (isfinite(alpha) && isfinite(mu) && -model <= h0)
            break;
        if (tries == 20)
            return kfac_fail(KFAC_ERR_NUMERIC, "K-FAC: quadratic model gave alpha %g, mu %g even with damping %g",
                             alpha, mu, s->lambda);
        s->lambda = fmin(s->lambda * 10.0, 1e8);
        s->st.damping_retries++;
    }
    float fa = (float)alpha, fm = (float)mu;
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float step = -fa * s->delta[i] + fm * d0[i];
        d0[i] = step;
        theta[i] += step;
    }
    s->st.alpha = alpha;
    s->st.mu = mu;
    if (t % s->kp.lm_every == 0) {
        double h1;
        if ((st = kfac_net_forward_in_place(net, net->batch)) != KFAC_OK ||
            (st = kfac_net_loss(net, y, &h1, NULL)) != KFAC_OK)
            return st;
        if (!isfinite(h1)) {
            /* reject the step: undo it, forget it as momentum, damp more */
#pragma omp parallel for simd schedule(static) if (n > 32768)
            for (size_t i = 0; i < n; i++) {
                theta[i] -= d0[i];
                d0[i] = 0.0f;
            }
            s->lambda = fmin(s->lambda * 10.0, 1e8);
            s->st.steps_rejected++;
            return KFAC_OK;
        }
        double rho = model < 0.0 ? (h1 - h0) / model : 0.0;
        double omega = pow(19.0 / 20.0, s->kp.lm_every);
        if (rho > 0.75)
            s->lambda *= omega;
        else if (rho < 0.25)
            s->lambda /= omega;
        s->lambda = fmin(fmax(s->lambda, 1e-8), 1e8);
        s->st.rho = rho;
    }
    return KFAC_OK;
}

kfac_status kfac_opt_step(kfac_optimizer *opt, float *theta, const float *grad, long t,
                          const kfac_step_ctx *ctx)
{
    (void)grad; /* formed here from abar and g, only where needed */
    kfac_state *s = opt->ext;
    kfac_net *net = ctx->net;
    if (!net || !ctx->y || !ctx->rng || net->batch < 1 || theta != net->theta)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC step without its network's forward and backward pass");
    const kfac_kfac_params *kp = &s->kp;
    int quad = kp->rule == KFAC_RULE_QUADRATIC;
    double h0 = 0.0;
    kfac_status st;
    if (quad && (st = kfac_net_loss(net, ctx->y, &h0, NULL)) != KFAC_OK)
        return st;

    double t0 = now();
    const float *gtrue[KFAC_MAX_LAYERS];
    int stats_now = (t - 1) % kp->cov_every == 0;
    if (stats_now) {
        if ((st = take_stats(s, net, ctx->rng, gtrue)) != KFAC_OK)
            return st;
    } else {
        for (int l = 0; l < net->n_layers; l++)
            gtrue[l] = net->g[l];
    }
    double t1 = now();
    s->st.seconds_stats += t1 - t0;

    /* KFAC.md 4: every T_inv steps, and at each statistics round of the
     * first T_inv steps while the factors are still settling */
    double damping = s->lambda + (quad ? opt->p.weight_decay : 0.0);
    int inv_now = !kfac_precond_inverted(s->pc) || (t - 1) % kp->inv_every == 0 ||
                  (stats_now && t <= kp->inv_every);
    if (inv_now && (st = invert(s, damping)) != KFAC_OK)
        return st;
    double t2 = now();
    s->st.seconds_invert += t2 - t1;

    /* the direction, with up to three 10x raises of the damping if a value
     * is not finite (tiny damping on a singular factor) */
    double vg = 0.0;
    float wd = opt->p.weight_decay;
    st = direction(s, net, gtrue, wd, quad, &vg);
    for (int retry = 0; st == KFAC_OK && !isfinite(vg) && retry < 3; retry++) {
        damping *= 10.0;
        s->st.damping_retries++;
        double ti = now();
        if ((st = invert(s, damping)) != KFAC_OK)
            return st;
        s->st.seconds_invert += now() - ti;
        st = direction(s, net, gtrue, wd, quad, &vg);
    }
    if (st != KFAC_OK)
        return st;
    if (!isfinite(vg))
        return kfac_fail(KFAC_ERR_NUMERIC, "K-FAC: the preconditioned gradient is not finite even with damping %g "
                                           "(the gradient itself may be)", damping);
    double fvp_before = s->st.seconds_fvp;
    if (quad)
        st = quadratic_update(opt, s, net, ctx->y, theta, t, vg, h0);
    else
        kl_clip_update(opt, s, theta, vg);
    s->st.seconds_precond += now() - t2 - (s->st.seconds_fvp - fvp_before);
    return st;
}
