/* precond.c - the K-FAC step engine (docs/algorithm.md §3-5), public as kfac_precond:
 * when to take factor statistics and invert, the preconditioned direction
 * (with damping raised when it is not finite), and the two step rules
 * (KL-clipped momentum; the quadratic model with caller-supplied exact
 * Fisher-vector products and Levenberg-Marquardt damping). It knows layers,
 * not networks: the built-in optimizer (kfac_opt.c) and a caller's own
 * network share it. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ckio.h"
#include "common.h"
#include "dist.h"
#include "factors.h"
#include "precond.h"

struct kfac_precond {
    kfac_kfac_params kp;
    float lr, momentum, wd; /* effective: kp's lr/momentum override op's */
    int n_layers, max_rows;
    int d_in[KFAC_MAX_LAYERS], d_out[KFAC_MAX_LAYERS];
    int pos[KFAC_MAX_LAYERS];        /* rows of abar and g per example (§3.1) */
    size_t off[KFAC_MAX_LAYERS + 1]; /* layer l's block in the flat vectors */
    kfac_factors *fc;
    float *delta;    /* n: +F^-1 grad, the preconditioned gradient */
    float *grad;     /* n: grad + wd W, where formed */
    float *v;        /* n: momentum (KL_CLIP) or previous update (QUADRATIC) */
    float *fv, *fv0; /* n: F delta and F delta0 (QUADRATIC) */
    int fused[KFAC_MAX_LAYERS]; /* the last step left layer l's delta in
                                   factored form (docs/algorithm.md §8.1):
                                   never written, added into v */
    int deferred[KFAC_MAX_LAYERS]; /* the same for a batch-form layer: delta
                                      = (1/B) P^T Q added into v by one
                                      product (§8) */
    double lambda;   /* current damping */
    long t;          /* steps taken */
    kfac_kfac_stats st;
    kfac_fisher_vec_fn fisher_vec;
    kfac_fisher_forms_fn forms;     /* in place of fisher_vec, if set */
    void *forms_user;
    kfac_fisher_model_fn model;     /* in place of forms, if set */
    void *model_user;
    kfac_batch_loss_fn loss;
    void *user;
    const kfac_dist *dist; /* the process group, given once at creation
                              (NULL or a group of one: alone) */
};

void kfac_precond_free(kfac_precond *pc)
{
    if (!pc)
        return;
    kfac_factors_free(pc->fc);
    kfac_free_floats(pc->delta), kfac_free_floats(pc->grad), kfac_free_floats(pc->v);
    kfac_free_floats(pc->fv), kfac_free_floats(pc->fv0);
    free(pc);
}

kfac_status kfac_precond_new(int n_layers, const int *d_in, const int *d_out, int max_rows,
                             const kfac_optim_params *op, const kfac_kfac_params *kp, kfac_precond **out)
{
    return kfac_precond_new_in_group(n_layers, d_in, d_out, NULL, max_rows, op, kp, NULL, out);
}

kfac_status kfac_precond_new_positions(int n_layers, const int *d_in, const int *d_out, const int *positions,
                                       int max_rows, const kfac_optim_params *op, const kfac_kfac_params *kp,
                                       kfac_precond **out)
{
    return kfac_precond_new_in_group(n_layers, d_in, d_out, positions, max_rows, op, kp, NULL, out);
}

kfac_status kfac_precond_new_in_group(int n_layers, const int *d_in, const int *d_out, const int *positions,
                                      int max_rows,
                                      const kfac_optim_params *op, const kfac_kfac_params *kp,
                                      const kfac_dist *group, kfac_precond **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_new: out is NULL");
    *out = NULL;
    if (!d_in || !d_out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_new: layer sizes are NULL");
    kfac_optim_params op_def;
    kfac_kfac_params kp_def;
    if (!op) {
        kfac_optim_params_init(&op_def);
        op = &op_def;
    }
    if (!kp) {
        kfac_kfac_params_init(&kp_def);
        kp = &kp_def;
    }
    kfac_status st;
    if ((st = kfac_optim_params_validate(op)) != KFAC_OK || (st = kfac_kfac_params_validate(kp)) != KFAC_OK)
        return st;
    /* kfac_factors_new checks the layer sizes and max_rows before it
     * allocates anything */
    kfac_precond *pc = calloc(1, sizeof *pc);
    if (!pc)
        return kfac_fail(KFAC_ERR_NOMEM, "K-FAC: out of memory");
    pc->dist = group;
    if ((st = kfac_factors_new(n_layers, d_in, d_out, positions, max_rows, kp, group, &pc->fc)) != KFAC_OK) {
        free(pc);
        return st;
    }
    pc->kp = *kp;
    pc->lr = kp->lr > 0.0f ? kp->lr : op->lr;
    pc->momentum = kp->momentum >= 0.0f ? kp->momentum : op->momentum;
    pc->wd = op->weight_decay;
    pc->n_layers = n_layers;
    pc->max_rows = max_rows;
    for (int l = 0; l < n_layers; l++) {
        pc->d_in[l] = d_in[l];
        pc->d_out[l] = d_out[l];
        pc->pos[l] = positions ? positions[l] : 1;
        pc->off[l + 1] = pc->off[l] + (size_t)d_in[l] * (size_t)d_out[l];
    }
    pc->lambda = kp->damping;
    size_t n = pc->off[n_layers];
    int quad = kp->rule == KFAC_RULE_QUADRATIC;
    if (!(pc->delta = kfac_alloc_floats(n)) || !(pc->grad = kfac_alloc_floats(n)) ||
        !(pc->v = kfac_alloc_floats(n)) ||
        (quad && (!(pc->fv = kfac_alloc_floats(n)) || !(pc->fv0 = kfac_alloc_floats(n))))) {
        kfac_precond_free(pc);
        return kfac_fail(KFAC_ERR_NOMEM, "K-FAC buffers (%zu parameters): out of memory", n);
    }
    memset(pc->v, 0, sizeof(float) * n);
    memset(pc->delta, 0, sizeof(float) * n);
    /* the batch form's factors, for delta added straight into v (§8) and
     * the quadratic rule's J delta (docs/algorithm.md §5.2); a group may
     * still be forming here, so direction() checks again at each step (in
     * a group each rank holds a slice and the deltas are summed) */
    if ((!kfac_dist_grouped(group) && (st = kfac_factors_keep_rows(pc->fc, quad)) != KFAC_OK) ||
        (st = kfac_blas_room()) != KFAC_OK) {
        kfac_precond_free(pc);
        return st;
    }
    *out = pc;
    return KFAC_OK;
}

kfac_status kfac_precond_set_fisher(kfac_precond *pc, kfac_fisher_vec_fn fisher_vec, kfac_batch_loss_fn loss,
                                    void *user)
{
    kfac_clear_error();
    if (!pc)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_set_fisher: preconditioner is NULL");
    pc->fisher_vec = fisher_vec;
    pc->loss = loss;
    pc->user = user;
    return KFAC_OK;
}

kfac_status kfac_precond_set_fisher_forms(kfac_precond *pc, kfac_fisher_forms_fn forms, void *user)
{
    kfac_clear_error();
    if (!pc)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_set_fisher_forms: preconditioner is NULL");
    pc->forms = forms;
    pc->forms_user = user;
    return KFAC_OK;
}

kfac_status kfac_precond_set_fisher_model(kfac_precond *pc, kfac_fisher_model_fn model, void *user)
{
    kfac_clear_error();
    if (!pc)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_set_fisher_model: preconditioner is NULL");
    pc->model = model;
    pc->model_user = user;
    return KFAC_OK;
}

int kfac_precond_direction_rows(const kfac_precond *pc, int l, int rows, float *out)
{
    if (!pc || l < 0 || l >= pc->n_layers || !out || rows < 0)
        return -1;
    return pc->kp.rule == KFAC_RULE_QUADRATIC ? kfac_factors_rows_product(pc->fc, l, rows, out) : 0;
}

int kfac_precond_stats_due(const kfac_precond *pc) { return pc ? pc->t % pc->kp.cov_every == 0 : 0; }

int kfac_precond_stat_rows(const kfac_precond *pc, int rows)
{
    if (!pc || rows < 1 || rows > pc->max_rows)
        return -1;
    int m = (int)ceil((double)pc->kp.stat_fraction * rows);
    return KFAC_MAX(1, KFAC_MIN(m, rows));
}

size_t kfac_precond_n_params(const kfac_precond *pc) { return pc ? pc->off[pc->n_layers] : 0; }
size_t kfac_precond_layer_offset(const kfac_precond *pc, int l)
{
    return pc && l >= 0 && l <= pc->n_layers ? pc->off[l] : 0;
}
long kfac_precond_steps(const kfac_precond *pc) { return pc ? pc->t : 0; }
const float *kfac_precond_direction(const kfac_precond *pc, int l)
{
    if (!pc || pc->t < 1 || l < 0 || l >= pc->n_layers)
        return NULL;
    float *d = pc->delta + pc->off[l];
    if (pc->fused[l]) /* formed now, from the factored form the step kept */
        kfac_factors_weight_add(pc->fc, l, pc->grad + pc->off[l], 1.0f, 0.0f, d);
    else if (pc->deferred[l])
        kfac_factors_batch_add(pc->fc, l, 1.0f, 0.0f, d);
    return d;
}
kfac_kfac_stats *kfac_precond_stats_ref(kfac_precond *pc) { return &pc->st; }

kfac_status kfac_precond_set_lr(kfac_precond *pc, float lr)
{
    if (!pc || !(lr > 0.0f && lr <= 1000.0f))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_set_lr: learning rate %g outside (0, 1000]", lr);
    pc->lr = lr;
    return KFAC_OK;
}

kfac_status kfac_precond_get_stats(const kfac_precond *pc, kfac_kfac_stats *out)
{
    if (!pc || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_get_stats: NULL argument");
    *out = pc->st;
    out->damping = pc->lambda;
    out->n_layers = pc->n_layers;
    for (int l = 0; l < pc->n_layers; l++) {
        out->rank_a[l] = kfac_factors_rank(pc->fc, l, 0);
        out->rank_g[l] = kfac_factors_rank(pc->fc, l, 1);
    }
    return KFAC_OK;
}

static kfac_status invert(kfac_precond *pc, double damping)
{
    kfac_invert_report rep;
    double t0 = kfac_seconds();
    kfac_status st = kfac_factors_invert(pc->fc, damping, &rep);
    pc->st.seconds_invert += kfac_seconds() - t0;
    if (st == KFAC_OK) {
        pc->st.inversions++;
        pc->st.fallbacks |= rep.fallbacks;
    }
    return st;
}

/* layer l's gradient as the caller formed it (every layer's, or this
 * one's because its abar was not kept), or NULL: formed here */
static const float *given_grad(const kfac_precond_input *in, int l)
{
    return in->grad ? in->grad[l] : in->layer_grad ? in->layer_grad[l] : NULL;
}

/* Whether layer l takes the batch form (docs/algorithm.md §8):
 * it works from g and abar, so not with weight decay. In a process group
 * each rank preconditions its own slice and the slices' deltas are summed
 * (the form is linear in the gradient): the same bytes as summing the
 * gradient, and the cheap form stays cheap when each rank holds few rows.
 * The quadratic rule needs the summed gradient itself, so there every
 * layer takes the weight form. */
static int batch_form(const kfac_precond *pc, const kfac_precond_input *in, int l)
{
    int grouped = kfac_dist_grouped(pc->dist);
    if (given_grad(in, l) || pc->wd != 0.0f || (grouped && pc->kp.rule == KFAC_RULE_QUADRATIC))
        return 0;
    /* every rank must choose alike: by the largest slice, not its own */
    int rows = kfac_dist_largest_slice(pc->dist, in->total_rows);
    /* (the quadratic rule forms the gradient anyway, which makes the batch
     * form's P^T Q extra; on fmnist-mlp it is still faster than the
     * weight form's skinny products and passes over d_out x d_in) */
    return kfac_factors_batch_pays(pc->fc, l, grouped ? rows : in->rows);
}

/* pc->grad <- grad + wd W for every layer that needs it (all with
 * need_grad): the caller's gradient, or (1/total) g^T abar summed over the
 * group. */
static kfac_status gradient(kfac_precond *pc, const kfac_precond_input *in, int need_grad)
{
    int B = in->rows, formed[KFAC_MAX_LAYERS];
    for (int l = 0; l < pc->n_layers; l++) {
        int din = pc->d_in[l], dout = pc->d_out[l];
        float *gl = pc->grad + pc->off[l];
        if (!(formed[l] = need_grad || !batch_form(pc, in, l)))
            continue;
        if (given_grad(in, l)) /* the caller's, already over total_rows: copied, decay must not touch it */
            memcpy(gl, given_grad(in, l), sizeof(float) * (size_t)din * dout);
        else /* grad_l (dout x din) <- (1/total) g^T (dout x B pos) abar (B pos x din) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, B * pc->pos[l], 1.0f / in->total_rows, in->gtrue[l],
                        dout, in->abar[l], din, 0.0f, gl, din);
    }
    kfac_status st = kfac_dist_sum_blocks(pc->dist, pc->grad, pc->off, formed, pc->n_layers);
    if (st != KFAC_OK || pc->wd == 0.0f)
        return st;
    for (int l = 0; l < pc->n_layers; l++)
        if (formed[l]) /* grad_l += wd W_l (docs/algorithm.md §5) */
            cblas_saxpy((int)(pc->off[l + 1] - pc->off[l]), pc->wd, in->w[l], 1, pc->grad + pc->off[l], 1);
    return KFAC_OK;
}

/* delta <- F_kfac^-1 (grad + wd W) layer by layer, in the form gradient()
 * prepared; *vg <- <delta, grad + wd W>. In a group the batch-form layers'
 * deltas and their part of vg are sums over the ranks' slices. */
static kfac_status direction(kfac_precond *pc, const kfac_precond_input *in, double *vg)
{
    double total = 0.0, slices = 0.0;
    int lr[KFAC_MAX_LAYERS], any_lr = 0, tri = pc->kp.inversion == KFAC_INV_TRIDIAG;
    if (tri) { /* the layers are coupled (docs/algorithm.md §4.7): all at once */
        const float *g[KFAC_MAX_LAYERS];
        float *d[KFAC_MAX_LAYERS];
        for (int l = 0; l < pc->n_layers; l++)
            g[l] = pc->grad + pc->off[l], d[l] = pc->delta + pc->off[l];
        kfac_status st = kfac_factors_apply_all(pc->fc, g, d);
        if (st != KFAC_OK)
            return st;
    }
    for (int l = 0; l < pc->n_layers; l++) {
        int din = pc->d_in[l];
        size_t off = pc->off[l], n = (size_t)din * pc->d_out[l];
        float *d = pc->delta + off, *gl = pc->grad + off;
        kfac_status st;
        lr[l] = batch_form(pc, in, l);
        if (!lr[l] || kfac_dist_grouped(pc->dist)) /* what a batch form kept is stale */
            kfac_factors_forget_rows(pc->fc, l);
        /* the kl_clip rule needs only <delta, grad> before the update, so
         * a weight-form layer whose factors are low-rank never writes
         * delta (docs/algorithm.md §8.1); the quadratic rule needs delta */
        pc->fused[l] = !lr[l] && pc->kp.rule == KFAC_RULE_KL_CLIP && kfac_factors_weight_fusable(pc->fc, l);
        pc->deferred[l] = lr[l] && pc->kp.rule == KFAC_RULE_KL_CLIP && !kfac_dist_grouped(pc->dist) &&
                          kfac_factors_keeps(pc->fc, l);
        /* the form and why (the flops the cost model counted), for the
         * report: of full batches, not an epoch's short last one */
        if (in->rows == pc->max_rows || pc->t == 0) {
            pc->st.batch_form[l] = lr[l];
            pc->st.flops_batch[l] = pc->st.flops_weights[l] = 0.0;
            if (!in->grad && pc->wd == 0.0f && pc->kp.inversion != KFAC_INV_EIGEN &&
                pc->kp.inversion != KFAC_INV_EKFAC && !tri)
                kfac_factors_form_flops(pc->fc, l, in->rows, &pc->st.flops_batch[l], &pc->st.flops_weights[l]);
        }
        if (lr[l] && kfac_dist_grouped(pc->dist)) {
            kfac_factors_batch_part(pc->fc, l, in->abar[l], din, in->gtrue[l], in->rows, 1.0f / in->total_rows, d);
            any_lr = 1;
        } else if (lr[l]) {
            double dot;
            if ((st = kfac_factors_apply_batch(pc->fc, l, in->abar[l], din, in->gtrue[l], in->rows,
                                               pc->deferred[l] ? NULL : d, &dot)) != KFAC_OK)
                return st;
            total += dot;
        } else if (pc->fused[l]) {
            double dot;
            if ((st = kfac_factors_weight_prepare(pc->fc, l, gl, &dot)) != KFAC_OK)
                return st;
            total += dot;
        } else {
            if (!tri && (st = kfac_factors_apply(pc->fc, l, gl, d)) != KFAC_OK)
                return st;
            total += kfac_dot_floats(d, gl, n);
        }
    }
    if (any_lr) {
        /* delta = sum of the slices' parts; <delta, grad> = sum over the
         * slices of <delta, (1/total) g^T abar> */
        kfac_status st = kfac_dist_sum_blocks(pc->dist, pc->delta, pc->off, lr, pc->n_layers);
        if (st != KFAC_OK)
            return st;
        for (int l = 0; l < pc->n_layers; l++)
            if (lr[l])
                slices += kfac_factors_rows_dot(pc->fc, l, in->abar[l], pc->d_in[l], in->gtrue[l], in->rows,
                                                pc->delta + pc->off[l]) /
                          in->total_rows;
        if ((st = kfac_dist_sum_doubles(pc->dist, &slices, 1)) != KFAC_OK)
            return st;
        total += slices;
    }
    *vg = total;
    return KFAC_OK;
}

/* docs/algorithm.md §5.1: nu = min(1, sqrt(c / (lr^2 <delta, grad>))); v <- mu v +
 * nu delta; W <- W - lr v. */
static void kl_clip_update(kfac_precond *pc, float *const *w, double vg)
{
    double lr = pc->lr;
    double nu = vg > 0.0 ? fmin(1.0, sqrt(pc->kp.kl_clip / (lr * lr * vg))) : 1.0;
    pc->st.nu = nu;
    float fnu = (float)nu, flr = pc->lr, mu = pc->momentum;
    for (int l = 0; l < pc->n_layers; l++) {
        size_t n = pc->off[l + 1] - pc->off[l];
        float *v = pc->v + pc->off[l], *theta = w[l];
        const float *delta = pc->delta + pc->off[l];
        if (pc->fused[l] || pc->deferred[l]) {
            /* v <- mu v + nu delta from delta's factors, then W -= lr v */
            if (pc->fused[l])
                kfac_factors_weight_add(pc->fc, l, pc->grad + pc->off[l], fnu, mu, v);
            else
                kfac_factors_batch_add(pc->fc, l, fnu, mu, v);
#pragma omp parallel for simd schedule(static) if (n > KFAC_PAR_STREAM)
            for (size_t i = 0; i < n; i++)
                theta[i] -= flr * v[i];
            continue;
        }
#pragma omp parallel for simd schedule(static) if (n > KFAC_PAR_STREAM)
        for (size_t i = 0; i < n; i++) {
            float vi = mu * v[i] + fnu * delta[i];
            v[i] = vi;
            theta[i] -= flr * vi;
        }
    }
}

static double dot(const float *a, const float *b, size_t n) { return kfac_dot_floats(a, b, n); }

/* W_l += sign * step_l for every layer, step in the flat layout */
static void add_step(kfac_precond *pc, float *const *w, const float *step, float sign)
{
    for (int l = 0; l < pc->n_layers; l++)
        cblas_saxpy((int)(pc->off[l + 1] - pc->off[l]), sign, step + pc->off[l], 1, w[l], 1);
}

/* docs/algorithm.md §5.2-5.3: delta_new = alpha D + mu delta0 with D = -delta the
 * K-FAC descent direction, alpha and mu minimising the quadratic model
 * with C = F + (lambda + wd) I and exact F products on this batch; every
 * lm_every steps lambda follows the reduction ratio rho. A model that
 * promises more than the loss is damped more; a step whose loss is not
 * finite is undone. */
static kfac_status quadratic_update(kfac_precond *pc, const kfac_precond_input *in, long t, double vg, double h0,
                                    int slopes)
{
    float *const *w = in->w;
    size_t n = pc->off[pc->n_layers];
    float *d0 = pc->v; /* the previous update */
    double t0 = kfac_seconds();
    /* with D = -delta: the F parts and the plain parts of D^T C D, D^T C d0,
     * d0^T C d0, and grad^T D, grad^T d0 */
    double dFd = 0.0, dd = 0.0, b1 = -vg, dFd0 = 0.0, dd0 = 0.0, d0Fd0 = 0.0, b2 = 0.0, d0norm = 0.0;
    const float *dv = pc->delta, *fv = pc->fv, *fv0 = pc->fv0, *gr = pc->grad;
    /* the plain parts in one pass over delta and d0 (all zero before the
     * first step and after a rejected one), and grad^T d0 where the
     * gradient was formed (with slopes it comes from the model callback) */
    if (slopes)
#pragma omp parallel for simd schedule(static) reduction(+ : dd, dd0, d0norm) if (n > KFAC_PAR_STREAM)
        for (size_t i = 0; i < n; i++) {
            double x = dv[i], y = d0[i];
            dd += x * x, dd0 += x * y, d0norm += y * y;
        }
    else
#pragma omp parallel for simd schedule(static) reduction(+ : dd, dd0, d0norm, b2) if (n > KFAC_PAR_STREAM)
        for (size_t i = 0; i < n; i++) {
            double x = dv[i], y = d0[i];
            dd += x * x, dd0 += x * y, d0norm += y * y, b2 += (double)gr[i] * y;
        }
    int has_prev = t > 1 && d0norm > 0.0;
    kfac_status st;
    if (pc->model || pc->forms) {
        /* the forms alone: sums over the callbacks' rows, summed over the
         * group, then their mean; with slopes, the batch's grad^T d0 too */
        double s[5] = {0};
        st = pc->model ? pc->model(pc->model_user, pc->delta, has_prev ? d0 : NULL, s)
                       : pc->forms(pc->forms_user, pc->delta, has_prev ? d0 : NULL, s);
        if (st == KFAC_OK)
            st = kfac_dist_sum_doubles(pc->dist, s, 3);
        pc->st.seconds_fvp += kfac_seconds() - t0;
        if (st != KFAC_OK)
            return st;
        double per = 1.0 / KFAC_MAX(1, in->total_fvp_rows);
        dFd = s[0] * per, dFd0 = s[1] * per, d0Fd0 = s[2] * per;
        if (has_prev && slopes) /* grad is not formed where the batch form was taken */
            b2 = s[4] / in->total_rows;
        goto solve;
    }
    /* the callbacks see this process's rows: F v is their mean */
    st = pc->fisher_vec(pc->user, pc->delta, pc->fv);
    if (st == KFAC_OK)
        st = kfac_dist_mean_floats(pc->dist, pc->fv, n, in->fvp_rows, in->total_fvp_rows);
    if (st == KFAC_OK && has_prev && (st = pc->fisher_vec(pc->user, d0, pc->fv0)) == KFAC_OK)
        st = kfac_dist_mean_floats(pc->dist, pc->fv0, n, in->fvp_rows, in->total_fvp_rows);
    pc->st.seconds_fvp += kfac_seconds() - t0;
    if (st != KFAC_OK)
        return st;
    if (has_prev) /* one pass over the four vectors, not three over pairs */
#pragma omp parallel for simd schedule(static) reduction(+ : dFd, dFd0, d0Fd0) if (n > KFAC_PAR_STREAM)
        for (size_t i = 0; i < n; i++) {
            double x = dv[i], y = d0[i];
            dFd += x * fv[i], dFd0 += x * fv0[i], d0Fd0 += y * fv0[i];
        }
    else
        dFd = dot(dv, fv, n);
solve:;
    double alpha = 0.0, mu = 0.0, model = 0.0;
    for (int tries = 0;; tries++) {
        double c = pc->lambda + pc->wd;
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
                             alpha, mu, pc->lambda);
        pc->lambda = fmin(pc->lambda * 10.0, 1e8);
        pc->st.damping_retries++;
    }
    float fa = (float)alpha, fm = (float)mu;
    for (int l = 0; l < pc->n_layers; l++) {
        size_t nl = pc->off[l + 1] - pc->off[l];
        float *theta = w[l], *dl = d0 + pc->off[l];
        const float *delta = pc->delta + pc->off[l];
#pragma omp parallel for simd schedule(static) if (nl > KFAC_PAR_STREAM)
        for (size_t i = 0; i < nl; i++) {
            float step = -fa * delta[i] + fm * dl[i];
            dl[i] = step;
            theta[i] += step;
        }
    }
    pc->st.alpha = alpha;
    pc->st.mu = mu;
    if (t % pc->kp.lm_every == 0) {
        double h1;
        if ((st = pc->loss(pc->user, &h1)) != KFAC_OK ||
            (st = kfac_dist_mean_double(pc->dist, &h1, in->rows, in->total_rows)) != KFAC_OK)
            return st;
        if (!isfinite(h1)) {
            /* reject the step: undo it, forget it as momentum, damp more */
            add_step(pc, w, d0, -1.0f);
            memset(d0, 0, sizeof(float) * n);
            pc->lambda = fmin(pc->lambda * 10.0, 1e8);
            pc->st.steps_rejected++;
            return KFAC_OK;
        }
        double rho = model < 0.0 ? (h1 - h0) / model : 0.0;
        double omega = pow(19.0 / 20.0, pc->kp.lm_every);
        if (rho > 0.75)
            pc->lambda *= omega;
        else if (rho < 0.25)
            pc->lambda /= omega;
        pc->lambda = fmin(fmax(pc->lambda, 1e-8), 1e8);
        pc->st.rho = rho;
    }
    return KFAC_OK;
}

/* bad[j] <- whether x[j][0..n[j]) holds a NaN or Inf, for k arrays in one
 * team (these run on every step's inputs, so one fork, and one vectorized
 * pass each: 0 * x is NaN exactly for NaN and Inf, and so is then the sum). */
static void nonfinite_flags(const float *const *x, const size_t *n, int k, int *bad)
{
    size_t total = 0;
    for (int j = 0; j < k; j++)
        total += n[j], bad[j] = 0;
#pragma omp parallel if (total > KFAC_PAR_STREAM)
    {
        size_t t = (size_t)omp_get_thread_num(), T = (size_t)omp_get_num_threads();
        for (int j = 0; j < k; j++) {
            float acc = 0.0f;
            const float *xj = x[j];
#pragma omp simd reduction(+ : acc)
            for (size_t i = n[j] * t / T; i < n[j] * (t + 1) / T; i++)
                acc += 0.0f * xj[i];
            if (acc != acc) {
#pragma omp atomic write
                bad[j] = 1;
            }
        }
    }
}

/* NaN or Inf in what the step reads would spread into the running
 * factors (for good: they are averages) or the weights. Checked before
 * anything changes, so such a step is rejected whole. O(B d) per layer,
 * against the O(B d^2) of the statistics. */
static kfac_status check_finite_input(const kfac_precond *pc, const kfac_precond_input *in, int stats_now)
{
    enum { CHECKS = 4 }; /* at most, per layer */
    const float *x[KFAC_MAX_LAYERS * CHECKS];
    size_t n[KFAC_MAX_LAYERS * CHECKS];
    const char *what[KFAC_MAX_LAYERS * CHECKS];
    int layer[KFAC_MAX_LAYERS * CHECKS], bad[KFAC_MAX_LAYERS * CHECKS], k = 0;
#define CHECK(arr, len, text) (x[k] = (arr), n[k] = (len), what[k] = (text), layer[k++] = l)
    for (int l = 0; l < pc->n_layers; l++) {
        /* per example: a layer's positions rows of each */
        size_t din = (size_t)pc->d_in[l] * pc->pos[l], dout = (size_t)pc->d_out[l] * pc->pos[l];
        const float *grad = given_grad(in, l);
        if (stats_now) {
            /* the statistics rows are the batch's first (stat_rows <=
             * rows): scanned below with the rest where the gradient
             * comes from the rows */
            if (grad)
                CHECK(in->abar[l], (size_t)in->stat_rows * din, "input abar (statistics for A)");
            CHECK(in->gstat[l], (size_t)in->stat_rows * dout, "pre-activation gradient g (statistics for G)");
        }
        if (grad) {
            CHECK(grad, (size_t)pc->d_in[l] * pc->d_out[l], "gradient");
        } else {
            CHECK(in->abar[l], (size_t)in->rows * din, "input abar");
            CHECK(in->gtrue[l], (size_t)in->rows * dout, "pre-activation gradient g");
        }
    }
#undef CHECK
    nonfinite_flags(x, n, k, bad);
    for (int j = 0; j < k; j++) {
        if (!bad[j])
            continue;
        size_t i = 0;
        while (i < n[j] && isfinite(x[j][i]))
            i++;
        return kfac_fail(KFAC_ERR_NUMERIC, "K-FAC: layer %d's %s is not finite (entry %zu); step %ld rejected, "
                         "nothing changed", layer[j] + 1, what[j], i, pc->t + 1);
    }
    return KFAC_OK;
}

kfac_status kfac_precond_step_input(kfac_precond *pc, const kfac_precond_input *in)
{
    const kfac_kfac_params *kp = &pc->kp;
    int quad = kp->rule == KFAC_RULE_QUADRATIC;
    long t = pc->t + 1;
    kfac_status st;

    double t0 = kfac_seconds();
    int stats_now = (t - 1) % kp->cov_every == 0;
    if ((st = check_finite_input(pc, in, stats_now)) != KFAC_OK)
        return st;
    if (stats_now && !kfac_dist_grouped(pc->dist)) {
        /* alone: straight into the running averages */
        kfac_factors_begin_stats(pc->fc);
        kfac_factors_accumulate_all(pc->fc, in->abar, pc->d_in, in->gstat, in->stat_rows, 1.0f / in->stat_rows);
        pc->st.stats_rounds++;
    } else if (stats_now) {
        /* this process's share of the batch statistics, summed over the
         * group before they join the running averages, so every rank
         * holds the same factors */
        kfac_factors_begin_stats(pc->fc);
        for (int l = 0; l < pc->n_layers; l++)
            kfac_factors_batch_stats(pc->fc, l, in->abar[l], pc->d_in[l], in->gstat[l], in->stat_rows,
                                     1.0f / in->total_stat_rows);
        kfac_factors_cross_stats(pc->fc, in->abar, pc->d_in, in->gstat, in->stat_rows, 1.0f / in->total_stat_rows);
        size_t n_stage;
        float *stage = kfac_factors_stage(pc->fc, &n_stage);
        if ((st = kfac_dist_sum_floats(pc->dist, stage, n_stage)) != KFAC_OK)
            return st;
        for (int l = 0; l < pc->n_layers; l++)
            kfac_factors_fold(pc->fc, l);
        kfac_factors_fold_cross(pc->fc);
        pc->st.stats_rounds++;
    }
    double t1 = kfac_seconds();
    pc->st.seconds_stats += t1 - t0;

    /* docs/algorithm.md §4: every T_inv steps, and at each statistics round of the
     * first T_inv steps while the factors are still settling */
    /* the kl_clip rule's damping schedule (docs/algorithm.md §5.1); the
     * quadratic rule adapts lambda itself */
    if (!quad && kp->damping_half_life > 0)
        pc->lambda = kp->damping * exp2(-(double)(t - 1) / kp->damping_half_life);
    double damping = pc->lambda + (quad ? pc->wd : 0.0);
    int inv_now = !kfac_factors_inverted(pc->fc) || (t - 1) % kp->inv_every == 0 ||
                  (stats_now && t <= kp->inv_every);
    if (inv_now && (st = invert(pc, damping)) != KFAC_OK)
        return st;
    if (stats_now && kp->inversion == KFAC_INV_EKFAC) {
        /* EKFAC's diagonal from this round's rows, in the bases the
         * direction uses (after a decomposition due now) */
        double te = kfac_seconds();
        st = kfac_factors_ekfac_stats(pc->fc, in->abar, pc->d_in, in->gstat, in->stat_rows,
                                      1.0f / KFAC_MAX(1, in->total_stat_rows));
        pc->st.seconds_stats += kfac_seconds() - te;
        if (st != KFAC_OK)
            return st;
    }
    double t2 = kfac_seconds(), inv_before = pc->st.seconds_invert;

    /* the direction, with up to three 10x raises of the damping if a value
     * is not finite (tiny damping on a singular factor) */
    double vg = 0.0, h0 = in->loss0;
    /* the quadratic rule needs grad^T d0: from the model callback's slope
     * when its rows are the whole batch (docs/algorithm.md §5.2), else from
     * the gradient of every layer */
    int slopes = quad && pc->model && !kfac_dist_grouped(pc->dist) && pc->wd == 0.0f &&
                 in->fvp_rows == in->rows && in->total_fvp_rows == in->total_rows;
    if ((st = gradient(pc, in, quad && !slopes)) != KFAC_OK ||
        (quad && (st = kfac_dist_mean_double(pc->dist, &h0, in->rows, in->total_rows)) != KFAC_OK))
        return st;
    /* in a group every rank holds the same inverses and gradient, so the
     * same vg: all retry, or go on, together */
    st = direction(pc, in, &vg);
    for (int retry = 0; st == KFAC_OK && !isfinite(vg) && retry < 3; retry++) {
        damping *= 10.0;
        pc->st.damping_retries++;
        if ((st = invert(pc, damping)) != KFAC_OK)
            return st;
        st = direction(pc, in, &vg);
    }
    if (st != KFAC_OK)
        return st;
    if (!isfinite(vg))
        return kfac_fail(KFAC_ERR_NUMERIC, "K-FAC: the preconditioned gradient is not finite even with damping %g "
                                           "(the gradient itself may be)", damping);
    double fvp_before = pc->st.seconds_fvp;
    if (quad)
        st = quadratic_update(pc, in, t, vg, h0, slopes);
    else
        kl_clip_update(pc, in->w, vg);
    pc->st.seconds_precond += kfac_seconds() - t2 - (pc->st.seconds_fvp - fvp_before) - (pc->st.seconds_invert - inv_before);
    if (st == KFAC_OK)
        pc->t = t;
    return st;
}

/* n pointers, none NULL */
static int all_set(const void *const *p, int n)
{
    if (!p)
        return 0;
    for (int l = 0; l < n; l++)
        if (!p[l])
            return 0;
    return 1;
}

kfac_status kfac_precond_step(kfac_precond *pc, const kfac_precond_batch *b)
{
    kfac_clear_error();
    if (!pc || !b)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_step: NULL argument");
    int L = pc->n_layers;
    if (b->rows < 1 || b->rows > pc->max_rows)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_step: %d rows outside [1, %d]", b->rows, pc->max_rows);
    if (!all_set((const void *const *)b->weights, L))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_step: weights need %d non-NULL pointers", L);
    /* the gradients, or what they are made of */
    int by_rows = !b->grads;
    if (by_rows && (!all_set((const void *const *)b->abar, L) || !all_set((const void *const *)b->g, L)))
        return kfac_fail(KFAC_ERR_INVALID_ARG,
                         "kfac_precond_step: without grads, abar and g need %d non-NULL pointers", L);
    if (!by_rows && !all_set((const void *const *)b->grads, L))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_step: grads need %d non-NULL pointers", L);
    int stats = kfac_precond_stats_due(pc);
    if (stats && (!all_set((const void *const *)b->abar, L) || !all_set((const void *const *)b->g_sampled, L)))
        return kfac_fail(KFAC_ERR_INVALID_ARG,
                         "kfac_precond_step: statistics are due at step %ld: abar and g_sampled need %d non-NULL "
                         "pointers",
                         pc->t + 1, L);
    if (pc->kp.rule == KFAC_RULE_QUADRATIC) {
        if ((!pc->fisher_vec && !pc->forms) || !pc->loss)
            return kfac_fail(KFAC_ERR_STATE, "kfac_precond_step: the quadratic rule needs kfac_precond_set_fisher");
        if (!isfinite(b->loss) || b->loss < 0.0)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_precond_step: batch loss %g must be finite and >= 0",
                             b->loss);
    }
    kfac_precond_input in = {.rows = b->rows,
                             .w = b->weights,
                             .grad = by_rows ? NULL : b->grads,
                             .abar = b->abar,
                             .gtrue = by_rows ? b->g : NULL,
                             .gstat = b->g_sampled,
                             .stat_rows = stats ? kfac_precond_stat_rows(pc, b->rows) : 0,
                             .total_rows = b->rows,
                             .loss0 = b->loss,
                             .fvp_rows = b->rows, /* the caller's callback: its rows */
                             .total_fvp_rows = b->rows};
    in.total_stat_rows = in.stat_rows;
    return kfac_precond_step_input(pc, &in);
}

void kfac_precond_io(kfac_precond *pc, kfac_ckio *io)
{
    kfac_ckio_expect(io, (uint64_t)pc->n_layers, "K-FAC layers");
    for (int l = 0; l < pc->n_layers; l++) {
        kfac_ckio_expect(io, (uint64_t)pc->d_in[l], "a K-FAC layer's d_in");
        kfac_ckio_expect(io, (uint64_t)pc->d_out[l], "a K-FAC layer's d_out");
    }
    /* the rule decides what v means */
    kfac_ckio_expect(io, (uint64_t)pc->kp.rule, "K-FAC step rule");
    kfac_ckio_long(io, &pc->t);
    kfac_ckio_f64(io, &pc->lambda);
    kfac_ckio_floats(io, pc->v, pc->off[pc->n_layers], "K-FAC momentum / previous update");
    kfac_kfac_stats *s = &pc->st;
    kfac_ckio_f64(io, &s->seconds_stats);
    kfac_ckio_f64(io, &s->seconds_invert);
    kfac_ckio_f64(io, &s->seconds_precond);
    kfac_ckio_f64(io, &s->seconds_fvp);
    kfac_ckio_long(io, &s->stats_rounds);
    kfac_ckio_long(io, &s->inversions);
    kfac_ckio_int(io, &s->fallbacks);
    kfac_ckio_long(io, &s->damping_retries);
    kfac_ckio_long(io, &s->steps_rejected);
    kfac_ckio_f64(io, &s->nu);
    kfac_ckio_f64(io, &s->alpha);
    kfac_ckio_f64(io, &s->mu);
    kfac_ckio_f64(io, &s->rho);
    kfac_factors_io(pc->fc, io);
}
