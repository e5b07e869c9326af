/* check.c - K-FAC measured against the exact natural gradient
 * (docs/algorithm.md §7): the exact damped natural gradient of N examples,
 * from the explicit Fisher on a tiny network and by conjugate gradients on
 * exact Fisher products at any size (CG checked against the explicit solve
 * where both exist); every direction's cosine with it, overall and per
 * layer, and its quadratic-model reduction; and the checks a numerical user
 * runs first (gradient by finite differences, F v by the R-op against
 * explicit F, the KL of a small step against its quadratic model). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fisher.h"
#include "linalg.h"
#include "loss.h"
#include "net.h"
#include "factors.h"

static double cosine(const double *a, const double *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += a[i] * b[i];
        aa += a[i] * a[i];
        bb += b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
}

static double rel_err(const double *a, const double *b, size_t n)
{
    double d = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        bb += b[i] * b[i];
    }
    return bb > 0 ? sqrt(d / bb) : INFINITY;
}

static double dot64(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* The explicit F is P^2 doubles: tiny networks only; CG above this. */
#define EXPLICIT_MAX 20000

/* fu <- (F + lambda I) u for a double vector, through the float R-op */
static kfac_status damped_fvp(kfac_fisher *fs, const kfac_net *net, double lambda, const double *u, size_t P,
                              float *vf, float *fvf, double *fu)
{
    for (size_t i = 0; i < P; i++)
        vf[i] = (float)u[i];
    kfac_status st = kfac_fisher_vec(fs, net, vf, fvf);
    for (size_t i = 0; st == KFAC_OK && i < P; i++)
        fu[i] = fvf[i] + lambda * u[i];
    return st;
}

/* (F + lambda I) x = b by conjugate gradients from x = 0 (docs/algorithm.md
 * §7.1): F + lambda I is symmetric positive definite, so CG converges; the
 * products in float (the R-op), the recurrences in double. Stops at
 * |r| <= tol |b| or after max_iter; *relres is then recomputed from a fresh
 * product, not the recurrence's. w: 3 P doubles of scratch. */
static kfac_status cg_solve(kfac_fisher *fs, const kfac_net *net, double lambda, const double *b, size_t P,
                            double tol, int max_iter, double *x, double *w, float *vf, float *fvf, int *iters,
                            double *relres)
{
    double *r = w, *pv = w + P, *ap = w + 2 * P, bb = dot64(b, b, P), rr = bb;
    memset(x, 0, sizeof *x * P);
    memcpy(r, b, sizeof *r * P);
    memcpy(pv, b, sizeof *pv * P);
    int k = 0;
    kfac_status st = KFAC_OK;
    while (k < max_iter && rr > tol * tol * bb) {
        if ((st = damped_fvp(fs, net, lambda, pv, P, vf, fvf, ap)) != KFAC_OK)
            return st;
        double pap = dot64(pv, ap, P);
        if (!(pap > 0.0) || !isfinite(pap))
            return kfac_fail(KFAC_ERR_NUMERIC, "kfac_check: CG met p^T (F + lambda I) p = %g at iteration %d", pap,
                             k + 1);
        double alpha = rr / pap, rr_new = 0.0;
        for (size_t i = 0; i < P; i++) {
            x[i] += alpha * pv[i];
            r[i] -= alpha * ap[i];
            rr_new += r[i] * r[i];
        }
        double beta = rr_new / rr;
        for (size_t i = 0; i < P; i++)
            pv[i] = r[i] + beta * pv[i];
        rr = rr_new;
        k++;
    }
    if ((st = damped_fvp(fs, net, lambda, x, P, vf, fvf, ap)) != KFAC_OK)
        return st;
    double res = 0.0;
    for (size_t i = 0; i < P; i++)
        res += (b[i] - ap[i]) * (b[i] - ap[i]);
    *iters = k;
    *relres = bb > 0.0 ? sqrt(res / bb) : 0.0;
    return KFAC_OK;
}

/* min_a 1/2 a^2 u^T (F + lambda I) u - a g^T u = -(g^T u)^2 / (2 u^T (F + lambda I) u) */
static kfac_status model_reduction(kfac_fisher *fs, const kfac_net *net, double lambda, const double *g,
                                   const double *u, size_t P, float *vf, float *fvf, double *fu, double *out)
{
    kfac_status st = damped_fvp(fs, net, lambda, u, P, vf, fvf, fu);
    double gu = dot64(g, u, P), ufu = dot64(u, fu, P);
    *out = ufu > 0.0 ? -gu * gu / (2.0 * ufu) : 0.0;
    return st;
}

/* A gradient entry and its index, to sort by magnitude. */
typedef struct ranked {
    double mag;
    size_t i;
} ranked;

static int by_mag_desc(const void *a, const void *b)
{
    double x = ((const ranked *)a)->mag, y = ((const ranked *)b)->mag;
    return (x < y) - (x > y);
}

static double batch_loss(kfac_net *net, const float *y, int n)
{
    double loss = NAN;
    if (kfac_net_forward_in_place(net, n) == KFAC_OK)
        kfac_net_loss(net, y, &loss, NULL);
    return loss;
}

/* The KL of a small step s along -d against 1/2 s^T F s: s what theta
 * actually moved by (float), F s by the R-op at theta. keep, vf, fvf: P
 * floats, z0: the outputs; theta is restored, abar and z are not. */
static kfac_status kl_check(kfac_fisher *fs, kfac_net *net, kfac_loss loss, const float *y, int n, const double *d,
                            float *keep, float *vf, float *fvf, float *z0, kfac_check_report *out)
{
    size_t P = net->n_params;
    int dL = net->outputs;
    double dn = 0, tn = 0;
    for (size_t i = 0; i < P; i++) {
        dn += d[i] * d[i];
        tn += (double)net->theta[i] * net->theta[i];
    }
    double eps = 1e-3 * sqrt(fmax(tn, 1.0) / dn);
    memcpy(keep, net->theta, sizeof(float) * P);
    for (size_t i = 0; i < P; i++)
        vf[i] = (float)(keep[i] - eps * d[i]) - keep[i];
    kfac_status st = kfac_fisher_vec(fs, net, vf, fvf);
    if (st != KFAC_OK)
        return st;
    double sfs = 0;
    for (size_t i = 0; i < P; i++)
        sfs += (double)vf[i] * fvf[i];
    out->kl_quadratic = 0.5 * sfs;
    memcpy(z0, net->z, sizeof(float) * (size_t)n * dL);
    for (size_t i = 0; i < P; i++)
        net->theta[i] = (float)(keep[i] - eps * d[i]);
    batch_loss(net, y, n);
    out->kl_measured = kfac_loss_types[loss].kl(z0, net->z, n, dL) / n;
    memcpy(net->theta, keep, sizeof(float) * P);
    return KFAC_OK;
}

/* The gradient g64 against differences of the float loss (central, or
 * one-sided across a kink): every
 * parameter (samples 0), else the `samples` largest entries, where float
 * differences of a 1000-example loss resolve them. fd, tmp: P doubles. */
static kfac_status gradient_check(kfac_net *net, const float *y, int n, const double *g64, int samples, double *fd,
                                  double *tmp, kfac_check_report *out)
{
    size_t P = net->n_params, m = samples ? KFAC_MIN(P, (size_t)samples) : P;
    ranked *rank = NULL;
    if (samples) {
        if (!(rank = malloc(sizeof *rank * P)))
            return kfac_fail(KFAC_ERR_NOMEM, "kfac_check: out of memory");
        for (size_t i = 0; i < P; i++)
            rank[i] = (ranked){fabs(g64[i]), i};
        qsort(rank, P, sizeof *rank, by_mag_desc);
    }
    double base = batch_loss(net, y, n);
    for (size_t k = 0; k < m; k++) {
        size_t i = rank ? rank[k].i : k;
        const float h = 1e-2f;
        float t0 = net->theta[i];
        net->theta[i] = t0 + h;
        double up = batch_loss(net, y, n);
        net->theta[i] = t0 - h;
        double down = batch_loss(net, y, n);
        net->theta[i] = t0;
        /* a ReLU kink or a max pooling's switch within h spoils the
         * central difference but leaves a one-sided one right: the one
         * that agrees best (a wrong gradient disagrees with all three) */
        double cand[3] = {(up - down) / (2.0 * h), (up - base) / h, (base - down) / h};
        fd[k] = cand[0];
        for (int c = 1; c < 3; c++)
            if (fabs(cand[c] - g64[i]) < fabs(fd[k] - g64[i]))
                fd[k] = cand[c];
        tmp[k] = g64[i];
    }
    free(rank);
    out->grad_rel_err = rel_err(fd, tmp, m);
    out->grad_samples = (int)m;
    return KFAC_OK;
}

/* the K-FAC direction of docs/algorithm.md §5 on this batch: factors from targets
 * sampled from the model, damped inverses, G^-1 grad A^-1 per layer */
static kfac_status kfac_direction(kfac_net *net, const kfac_train_params *p, const float *grad, int n,
                                  float *ysample, kfac_rng *rng, float *delta, kfac_check_report *out)
{
    int L = net->n_blocks, d_in[KFAC_MAX_LAYERS], d_out[KFAC_MAX_LAYERS], pos[KFAC_MAX_LAYERS];
    kfac_net_blocks(net, d_in, d_out, pos);
    const float *ab[KFAC_MAX_LAYERS], *gs[KFAC_MAX_LAYERS];
    for (int l = 0; l < L; l++) {
        const kfac_layer *ly = &net->layers[net->block_layer[l]];
        ab[l] = ly->abar, gs[l] = ly->g;
    }
    kfac_factors *pc;
    kfac_status st = kfac_factors_new(L, d_in, d_out, pos, n, &p->kfac, NULL, &pc);
    if (st != KFAC_OK)
        return st;
    kfac_loss_types[net->spec.loss].sample(net->z, ysample, n, net->outputs, kfac_rng_next(rng), 0);
    if ((st = kfac_net_backward(net, ysample, NULL)) != KFAC_OK)
        goto done;
    kfac_factors_begin_stats(pc);
    for (int l = 0; l < L && st == KFAC_OK; l++)
        st = kfac_factors_accumulate(pc, l, ab[l], d_in[l], gs[l], n);
    if (st == KFAC_OK && p->kfac.inversion == KFAC_INV_TRIDIAG) { /* §4.7's cross moments, same rows */
        kfac_factors_cross_stats(pc, ab, d_in, gs, n, 1.0f / n);
        kfac_factors_fold_cross(pc);
    }
    if (st == KFAC_OK)
        st = kfac_factors_invert(pc, p->kfac.damping, NULL);
    if (st == KFAC_OK && p->kfac.inversion == KFAC_INV_EKFAC)
        st = kfac_factors_ekfac_stats(pc, ab, d_in, gs, n, 1.0f / n);
    if (st == KFAC_OK && p->kfac.inversion == KFAC_INV_TRIDIAG) {
        const float *g[KFAC_MAX_LAYERS];
        float *d[KFAC_MAX_LAYERS];
        for (int l = 0; l < L; l++) {
            size_t at = net->layers[net->block_layer[l]].offset;
            g[l] = grad + at, d[l] = delta + at;
        }
        st = kfac_factors_apply_all(pc, g, d);
    }
    for (int l = 0; l < L && st == KFAC_OK && p->kfac.inversion != KFAC_INV_TRIDIAG; l++) {
        size_t at = net->layers[net->block_layer[l]].offset;
        st = kfac_factors_apply(pc, l, grad + at, delta + at);
    }
    out->n_layers = L;
    for (int l = 0; l < L && p->kfac.inversion == KFAC_INV_LOWRANK; l++) {
        out->rank_a[l] = kfac_factors_rank(pc, l, 0);
        out->rank_g[l] = kfac_factors_rank(pc, l, 1);
    }
done:
    kfac_factors_free(pc);
    return st;
}

void kfac_check_options_init(kfac_check_options *o)
{
    if (!o)
        return;
    o->warmup_epochs = 1;
    o->examples = 1000;
    o->cg_tol = 1e-4;
    o->cg_max_iter = 1000;
    o->grad_samples = 64;
}

kfac_status kfac_check(const kfac_net_spec *spec, const kfac_train_params *p, const kfac_dataset *train,
                       int warmup_epochs, int examples, kfac_check_report *out)
{
    kfac_check_options o;
    kfac_check_options_init(&o);
    o.warmup_epochs = warmup_epochs;
    o.examples = examples;
    return kfac_check_with(spec, p, train, &o, out);
}

kfac_status kfac_check_with(const kfac_net_spec *spec, const kfac_train_params *p, const kfac_dataset *train,
                            const kfac_check_options *o, kfac_check_report *out)
{
    kfac_clear_error();
    if (!spec || !p || !train || !o || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_check: NULL argument");
    kfac_status vst = kfac_train_params_validate(p);
    if (vst != KFAC_OK)
        return vst;
    if (o->warmup_epochs < 0 || o->warmup_epochs > 100000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_check: %d warm-up epochs outside [0, 100000]", o->warmup_epochs);
    if (o->examples < 1 || o->examples > train->n)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_check: %d examples outside [1, %d]", o->examples, train->n);
    if (!(o->cg_tol > 0.0 && o->cg_tol < 1.0))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_check: CG tolerance %g outside (0, 1)", o->cg_tol);
    if (o->cg_max_iter < 1 || o->cg_max_iter > 1000000 || o->grad_samples < 1 || o->grad_samples > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_check: CG iterations %d or gradient samples %d outside "
                         "[1, 1000000]", o->cg_max_iter, o->grad_samples);
    kfac_trainer *tr = NULL;
    kfac_net *net = NULL;
    kfac_fisher *fs = NULL;
    double *F = NULL, *chol = NULL, *work = NULL;
    float *y = NULL, *grad = NULL, *delta = NULL, *vf = NULL, *fvf = NULL, *z0 = NULL;
    kfac_dataset pooled = {0};
    kfac_status st = kfac_net_new(spec, o->examples, &net);
    if (st != KFAC_OK)
        return st;
    size_t P = net->n_params;
    int explicit_f = P <= EXPLICIT_MAX, L = net->n_blocks;
    /* pooled once here (the net file's `pool`), for the trainer and the batch */
    if ((st = kfac_dataset_for_net(spec, train, &pooled, &train)) != KFAC_OK ||
        (st = kfac_trainer_new(spec, p, train, &tr)) != KFAC_OK) {
        kfac_net_free(net);
        kfac_dataset_free(&pooled);
        return st;
    }
    memset(out, 0, sizeof *out);
    for (int e = 0; e < o->warmup_epochs && st == KFAC_OK; e++) {
        kfac_epoch_stats es;
        st = kfac_trainer_epoch(tr, NULL, NULL, &es);
        out->warmup_loss = es.train_loss;
    }
    if (st != KFAC_OK)
        goto done;
    double t_start = kfac_seconds();
    memcpy(net->theta, kfac_net_params(kfac_trainer_net(tr)), sizeof(float) * P);
    int n = o->examples, dL = net->outputs;
    size_t ld0;
    float *x0 = kfac_net_input_rows(net, &ld0);
    y = kfac_alloc_floats((size_t)n * dL);
    grad = kfac_alloc_floats(P), delta = kfac_alloc_floats(P), vf = kfac_alloc_floats(P), fvf = kfac_alloc_floats(P);
    z0 = kfac_alloc_floats((size_t)n * dL);
    work = malloc(sizeof *work * 12 * P);
    if (explicit_f)
        F = malloc(sizeof *F * P * P), chol = malloc(sizeof *chol * P * P);
    if (!y || !grad || !delta || !vf || !fvf || !z0 || !work || (explicit_f && (!F || !chol))) {
        st = kfac_fail(KFAC_ERR_NOMEM, "kfac_check: out of memory for %zu parameters%s", P,
                       explicit_f ? " and their explicit Fisher" : "");
        goto done;
    }
    /* the batch: the first n training examples and their targets */
    int classify = spec->loss == KFAC_LOSS_SOFTMAX_XENT;
    for (int i = 0; i < n; i++) {
        memcpy(x0 + (size_t)i * ld0, train->x + (size_t)i * train->features,
               sizeof(float) * (size_t)train->features);
        float *t = y + (size_t)i * dL;
        if (classify) {
            memset(t, 0, sizeof(float) * (size_t)dL);
            t[train->labels[i]] = 1.0f;
        } else {
            memcpy(t, train->x + (size_t)i * train->features, sizeof(float) * (size_t)dL);
        }
    }
    double *g64 = work, *d = work + P, *dk = work + 2 * P, *tmp = work + 3 * P, *fd = work + 4 * P,
           *x_cg = work + 5 * P, *cg_w = work + 6 * P /* 3 P */, *dconf = work + 9 * P, *fu = work + 10 * P;
    if (batch_loss(net, y, n) != batch_loss(net, y, n) || (st = kfac_net_backward(net, y, grad)) != KFAC_OK) {
        st = st != KFAC_OK ? st : kfac_fail(KFAC_ERR_NUMERIC, "kfac_check: the loss is not finite");
        goto done;
    }
    for (size_t i = 0; i < P; i++)
        g64[i] = grad[i];
    double lambda = p->kfac.damping;
    kfac_rng rng;
    kfac_rng_seed(&rng, p->seed + 7);
    if ((st = kfac_fisher_new(net, &fs)) != KFAC_OK)
        goto done;

    /* d = (F + lambda I)^-1 grad by conjugate gradients on R-op products */
    if ((st = cg_solve(fs, net, lambda, g64, P, o->cg_tol, o->cg_max_iter, x_cg, cg_w, vf, fvf,
                       &out->cg_iterations, &out->cg_rel_residual)) != KFAC_OK)
        goto done;
    out->fvp_rel_err = out->cg_rel_err = NAN;
    if (explicit_f) {
        /* tiny: explicit F, d by Cholesky in double; CG's own check */
        if ((st = kfac_fisher_explicit(net, F)) != KFAC_OK)
            goto done;
        memcpy(chol, F, sizeof *F * P * P);
        for (size_t i = 0; i < P; i++)
            chol[i * P + i] += lambda;
        memcpy(d, g64, sizeof *d * P);
        if ((st = kfac_spd_solve_double(chol, (int)P, d, "kfac_check: F + lambda I")) != KFAC_OK)
            goto done;
        out->cg_rel_err = rel_err(x_cg, d, P);
        /* F v: the R-op against the explicit matrix, for a random v */
        for (size_t i = 0; i < P; i++)
            vf[i] = (float)kfac_rng_normal(&rng);
        if ((st = kfac_fisher_vec(fs, net, vf, fvf)) != KFAC_OK)
            goto done;
        for (size_t i = 0; i < P; i++) {
            double acc = 0;
            for (size_t j = 0; j < P; j++)
                acc += F[i * P + j] * vf[j];
            tmp[i] = acc;
            fd[i] = fvf[i];
        }
        out->fvp_rel_err = rel_err(fd, tmp, P);
    } else {
        memcpy(d, x_cg, sizeof *d * P);
    }

    float *keep = delta; /* theta's copy while stepping */
    if ((st = kl_check(fs, net, spec->loss, y, n, d, keep, vf, fvf, z0, out)) != KFAC_OK ||
        (st = gradient_check(net, y, n, g64, explicit_f ? 0 : o->grad_samples, fd, tmp, out)) != KFAC_OK)
        goto done;

    /* K-FAC on the same batch and damping, against d: each inversion
     * kind from the same sampled targets */
    batch_loss(net, y, n); /* restores abar and z at theta */
    int conv = 0; /* TRIDIAG has no convolutional form (§4.7, §3.1) */
    for (int l = 0; l < net->n_blocks; l++)
        conv |= net->layers[net->block_layer[l]].positions > 1;
    for (int k = 0; k < KFAC_INV_COUNT; k++) {
        kfac_train_params q = *p;
        kfac_rng same = rng;
        q.kfac.inversion = (kfac_inversion)k;
        if (conv && k == KFAC_INV_TRIDIAG && k != (int)p->kfac.inversion) {
            out->cos_by_inversion[k] = NAN;
            continue;
        }
        if ((st = kfac_direction(net, &q, grad, n, y, &same, delta, out)) != KFAC_OK)
            goto done;
        for (size_t i = 0; i < P; i++)
            dk[i] = delta[i];
        out->cos_by_inversion[k] = cosine(dk, d, P);
        if (k == (int)p->kfac.inversion)
            memcpy(dconf, dk, sizeof *dk * P);
    }
    /* the sampled-target pass left its g in the net; abar and z are
     * still theta's, which is all the R-op reads */
    out->cos_kfac = out->cos_by_inversion[p->kfac.inversion];
    out->cos_grad = cosine(g64, d, P);
    out->n_layers = L;
    for (int l = 0; l < L; l++) {
        const kfac_layer *ly = &net->layers[net->block_layer[l]];
        size_t a = ly->offset, len = ly->n_params;
        out->cos_layer_grad[l] = cosine(g64 + a, d + a, len);
        out->cos_layer_kfac[l] = cosine(dconf + a, d + a, len);
    }
    if ((st = model_reduction(fs, net, lambda, g64, g64, P, vf, fvf, fu, &out->model_grad)) != KFAC_OK ||
        (st = model_reduction(fs, net, lambda, g64, dconf, P, vf, fvf, fu, &out->model_kfac)) != KFAC_OK ||
        (st = model_reduction(fs, net, lambda, g64, d, P, vf, fvf, fu, &out->model_exact)) != KFAC_OK)
        goto done;
    out->explicit_fisher = explicit_f;
    out->n_params = (int)P;
    out->examples = n;
    out->damping = lambda;
    out->seconds = kfac_seconds() - t_start;
done:
    kfac_fisher_free(fs);
    kfac_net_free(net);
    kfac_trainer_free(tr);
    kfac_dataset_free(&pooled);
    free(F), free(chol), free(work);
    kfac_free_floats(y), kfac_free_floats(grad), kfac_free_floats(delta), kfac_free_floats(vf), kfac_free_floats(fvf);
    kfac_free_floats(z0);
    return st;
}
