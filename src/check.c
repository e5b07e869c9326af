/* check.c - K-FAC measured against the exact natural gradient on a tiny
 * network (docs/algorithm.md §7): the explicit Fisher of N examples, the exact
 * damped natural gradient, and the checks a numerical user runs first
 * (gradient by finite differences, F v by the R-op against explicit F, the
 * KL of a small step against its quadratic model). */
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

static double batch_loss(kfac_net *net, const float *y, int n)
{
    double loss = NAN;
    if (kfac_net_forward_in_place(net, n) == KFAC_OK)
        kfac_net_loss(net, y, &loss, NULL);
    return loss;
}

/* the K-FAC direction of docs/algorithm.md §5 on this batch: factors from targets
 * sampled from the model, damped inverses, G^-1 grad A^-1 per layer */
static kfac_status kfac_direction(kfac_net *net, const kfac_train_params *p, const float *grad, int n,
                                  float *ysample, kfac_rng *rng, float *delta, kfac_check_report *out)
{
    int L = net->n_layers, d_in[KFAC_MAX_LAYERS], d_out[KFAC_MAX_LAYERS];
    for (int l = 0; l < L; l++) {
        d_in[l] = net->dims[l] + 1;
        d_out[l] = net->dims[l + 1];
    }
    kfac_factors *pc;
    kfac_status st = kfac_factors_new(L, d_in, d_out, n, &p->kfac, NULL, &pc);
    if (st != KFAC_OK)
        return st;
    kfac_loss_types[net->spec.loss].sample(net->z, ysample, n, net->dims[L], kfac_rng_next(rng), 0);
    if ((st = kfac_net_backward(net, ysample, NULL)) != KFAC_OK)
        goto done;
    kfac_factors_begin_stats(pc);
    for (int l = 0; l < L && st == KFAC_OK; l++)
        st = kfac_factors_accumulate(pc, l, net->abar[l], d_in[l], net->g[l], n);
    if (st == KFAC_OK)
        st = kfac_factors_invert(pc, p->kfac.damping, NULL);
    for (int l = 0; l < L && st == KFAC_OK; l++)
        st = kfac_factors_apply(pc, l, grad + net->offset[l], delta + net->offset[l]);
    out->n_layers = L;
    for (int l = 0; l < L && p->kfac.inversion == KFAC_INV_LOWRANK; l++) {
        out->rank_a[l] = kfac_factors_rank(pc, l, 0);
        out->rank_g[l] = kfac_factors_rank(pc, l, 1);
    }
done:
    kfac_factors_free(pc);
    return st;
}

kfac_status kfac_check(const kfac_net_spec *spec, const kfac_train_params *p, const kfac_dataset *train,
                       int warmup_epochs, int examples, kfac_check_report *out)
{
    kfac_clear_error();
    if (!spec || !p || !train || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_check: NULL argument");
    kfac_status vst = kfac_train_params_validate(p);
    if (vst != KFAC_OK)
        return vst;
    if (warmup_epochs < 0 || examples < 1 || examples > train->n)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_check: %d examples outside [1, %d]", examples, train->n);
    kfac_trainer *tr = NULL;
    kfac_net *net = NULL;
    kfac_fisher *fs = NULL;
    double *F = NULL, *chol = NULL, *work = NULL;
    float *y = NULL, *grad = NULL, *delta = NULL, *v = NULL, *fv = NULL;
    kfac_dataset pooled = {0};
    /* the size check comes before any training */
    kfac_status st = kfac_net_new(spec, examples, &net);
    if (st != KFAC_OK)
        return st;
    size_t P = net->n_params;
    if (P > 20000) {
        kfac_net_free(net);
        return kfac_fail(KFAC_ERR_INVALID_ARG,
                         "kfac_check: %zu parameters; the exact Fisher needs a tiny network (<= 20000)", P);
    }
    /* pooled once here (the net file's `pool`), for the trainer and the batch */
    if ((st = kfac_dataset_for_net(spec, train, &pooled, &train)) != KFAC_OK ||
        (st = kfac_trainer_new(spec, p, train, &tr)) != KFAC_OK) {
        kfac_net_free(net);
        kfac_dataset_free(&pooled);
        return st;
    }
    memset(out, 0, sizeof *out);
    for (int e = 0; e < warmup_epochs && st == KFAC_OK; e++) {
        kfac_epoch_stats es;
        st = kfac_trainer_epoch(tr, NULL, NULL, &es);
        out->warmup_loss = es.train_loss;
    }
    if (st != KFAC_OK)
        goto done;
    memcpy(net->theta, kfac_net_params(kfac_trainer_net(tr)), sizeof(float) * P);
    int n = examples, dL = net->dims[net->n_layers];
    y = kfac_alloc_floats((size_t)n * dL);
    grad = kfac_alloc_floats(P), delta = kfac_alloc_floats(P), v = kfac_alloc_floats(P), fv = kfac_alloc_floats(P);
    F = malloc(sizeof *F * P * P), chol = malloc(sizeof *chol * P * P), work = malloc(sizeof *work * 6 * P);
    if (!y || !grad || !delta || !v || !fv || !F || !chol || !work) {
        st = kfac_fail(KFAC_ERR_NOMEM, "kfac_check: out of memory for a %zu x %zu Fisher", P, P);
        goto done;
    }
    /* the batch: the first n training examples and their targets */
    int classify = spec->loss == KFAC_LOSS_SOFTMAX_XENT;
    for (int i = 0; i < n; i++) {
        memcpy(net->abar[0] + (size_t)i * (net->dims[0] + 1), train->x + (size_t)i * train->features,
               sizeof(float) * (size_t)train->features);
        float *t = y + (size_t)i * dL;
        if (classify) {
            memset(t, 0, sizeof(float) * (size_t)dL);
            t[train->labels[i]] = 1.0f;
        } else {
            memcpy(t, train->x + (size_t)i * train->features, sizeof(float) * (size_t)dL);
        }
    }
    double *g64 = work, *d_exact = work + P, *dk = work + 2 * P, *tmp = work + 3 * P, *fd = work + 4 * P;
    if (batch_loss(net, y, n) != batch_loss(net, y, n) || (st = kfac_net_backward(net, y, grad)) != KFAC_OK) {
        st = st != KFAC_OK ? st : kfac_fail(KFAC_ERR_NUMERIC, "kfac_check: the loss is not finite");
        goto done;
    }
    for (size_t i = 0; i < P; i++)
        g64[i] = grad[i];

    /* explicit F, then d = (F + lambda I)^-1 grad by Cholesky in double */
    if ((st = kfac_fisher_explicit(net, F)) != KFAC_OK)
        goto done;
    double lambda = p->kfac.damping;
    memcpy(chol, F, sizeof *F * P * P);
    for (size_t i = 0; i < P; i++)
        chol[i * P + i] += lambda;
    memcpy(d_exact, g64, sizeof *d_exact * P);
    if ((st = kfac_spd_solve_double(chol, (int)P, d_exact, "kfac_check: F + lambda I")) != KFAC_OK)
        goto done;

    /* F v: the R-op against the explicit matrix, for a random v */
    kfac_rng rng;
    kfac_rng_seed(&rng, p->seed + 7);
    for (size_t i = 0; i < P; i++)
        v[i] = (float)kfac_rng_normal(&rng);
    if ((st = kfac_fisher_new(net, &fs)) != KFAC_OK || (st = kfac_fisher_vec(fs, net, v, fv)) != KFAC_OK)
        goto done;
    for (size_t i = 0; i < P; i++) {
        double acc = 0;
        for (size_t j = 0; j < P; j++)
            acc += F[i * P + j] * v[j];
        tmp[i] = acc;
        fd[i] = fv[i];
    }
    out->fvp_rel_err = rel_err(fd, tmp, P);

    /* KL of a small step along -d against 1/2 s^T F s */
    double dn = 0, tn = 0;
    for (size_t i = 0; i < P; i++) {
        dn += d_exact[i] * d_exact[i];
        tn += (double)net->theta[i] * net->theta[i];
    }
    double eps = 1e-3 * sqrt(fmax(tn, 1.0) / dn);
    float *z0 = kfac_alloc_floats((size_t)n * dL);
    if (!z0) {
        st = kfac_fail(KFAC_ERR_NOMEM, "kfac_check: out of memory");
        goto done;
    }
    memcpy(z0, net->z, sizeof(float) * (size_t)n * dL);
    float *keep = delta; /* theta's copy while stepping */
    memcpy(keep, net->theta, sizeof(float) * P);
    for (size_t i = 0; i < P; i++)
        net->theta[i] = (float)(keep[i] - eps * d_exact[i]);
    batch_loss(net, y, n);
    out->kl_measured = kfac_loss_types[spec->loss].kl(z0, net->z, n, dL) / n;
    double sfs = 0;
    for (size_t i = 0; i < P; i++) {
        /* s = -eps d, using what theta actually moved by (float) */
        double si = (double)net->theta[i] - keep[i], acc = 0;
        for (size_t j = 0; j < P; j++)
            acc += F[i * P + j] * ((double)net->theta[j] - keep[j]);
        sfs += si * acc;
    }
    out->kl_quadratic = 0.5 * sfs;
    memcpy(net->theta, keep, sizeof(float) * P);
    kfac_free_floats(z0);

    /* the gradient against central differences of the float loss */
    for (size_t i = 0; i < P; i++) {
        const float h = 1e-2f;
        float t0 = net->theta[i];
        net->theta[i] = t0 + h;
        double up = batch_loss(net, y, n);
        net->theta[i] = t0 - h;
        double down = batch_loss(net, y, n);
        net->theta[i] = t0;
        fd[i] = (up - down) / (2.0 * h);
    }
    out->grad_rel_err = rel_err(fd, g64, P);

    /* K-FAC on the same batch and damping, against d: each inversion
     * kind from the same sampled targets */
    batch_loss(net, y, n); /* restores abar and z at theta */
    for (int k = 0; k < KFAC_INV_COUNT; k++) {
        kfac_train_params q = *p;
        kfac_rng same = rng;
        q.kfac.inversion = (kfac_inversion)k;
        if ((st = kfac_direction(net, &q, grad, n, y, &same, delta, out)) != KFAC_OK)
            goto done;
        for (size_t i = 0; i < P; i++)
            dk[i] = delta[i];
        out->cos_by_inversion[k] = cosine(dk, d_exact, P);
    }
    out->cos_kfac = out->cos_by_inversion[p->kfac.inversion];
    out->cos_grad = cosine(g64, d_exact, P);
    out->n_params = (int)P;
    out->examples = n;
    out->damping = lambda;
done:
    kfac_fisher_free(fs);
    kfac_net_free(net);
    kfac_trainer_free(tr);
    kfac_dataset_free(&pooled);
    free(F), free(chol), free(work);
    kfac_free_floats(y), kfac_free_floats(grad), kfac_free_floats(delta), kfac_free_floats(v), kfac_free_floats(fv);
    return st;
}
