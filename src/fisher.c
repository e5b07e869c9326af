/* fisher.c - exact Fisher-vector products by one R-op (forward-mode) pass,
 * H_out at the output and one backward pass (docs/algorithm.md §6); and the explicit
 * Fisher of a tiny net from per-example Jacobians (docs/algorithm.md §7). */
#include <cblas.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "common.h"
#include "fisher.h"
#include "loss.h"
#include "net.h"

struct kfac_fisher {
    int n_layers;                  /* L of the net it was made for */
    int out_size[KFAC_MAX_LAYERS]; /* its layers' outputs per example */
    int max_batch;
    float *ra[KFAC_MAX_LAYERS + 1]; /* ra[l]: R(x) of layer l's input, max_batch x
                                       layer l-1's out_size, l = 1..L-1; ra[L] = R(z).
                                       ra[0] = R(input) = 0 is never stored */
    float *g[KFAC_MAX_LAYERS];      /* g[l]: backward signal at layer l's
                                       pre-activation; g[L-1] first holds
                                       u = H_out R(z) */
    float *u, *hu;                  /* max_batch x outputs: J v1 and H J v
                                       (kfac_fisher_forms) */
};

void kfac_fisher_free(kfac_fisher *f)
{
    if (!f)
        return;
    for (int l = 0; l <= f->n_layers; l++)
        kfac_free_floats(f->ra[l]);
    for (int l = 0; l < f->n_layers; l++)
        kfac_free_floats(f->g[l]);
    kfac_free_floats(f->u), kfac_free_floats(f->hu);
    free(f);
}

static int same_net(const kfac_fisher *f, const kfac_net *net)
{
    if (net->n_layers != f->n_layers)
        return 0;
    for (int l = 0; l < f->n_layers; l++)
        if (net->layers[l].out_size != f->out_size[l])
            return 0;
    return 1;
}

kfac_status kfac_fisher_new(const kfac_net *net, kfac_fisher **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_fisher_new: out is NULL");
    *out = NULL;
    if (!net)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_fisher_new: net is NULL");
    kfac_fisher *f = calloc(1, sizeof *f);
    if (!f)
        return kfac_fail(KFAC_ERR_NOMEM, "Fisher buffers: out of memory");
    f->n_layers = net->n_layers;
    f->max_batch = net->max_batch;
    for (int l = 0; l < f->n_layers; l++)
        f->out_size[l] = net->layers[l].out_size;
    size_t mb = (size_t)net->max_batch;
    int ok = 1;
    for (int l = 1; ok && l <= f->n_layers; l++)
        ok = (f->ra[l] = kfac_alloc_floats(mb * (size_t)f->out_size[l - 1])) != NULL;
    for (int l = 0; ok && l < f->n_layers; l++)
        ok = (f->g[l] = kfac_alloc_floats(mb * (size_t)f->out_size[l])) != NULL;
    ok = ok && (f->u = kfac_alloc_floats(mb * (size_t)net->outputs)) && (f->hu = kfac_alloc_floats(mb * (size_t)net->outputs));
    if (!ok) {
        kfac_fisher_free(f);
        return kfac_fail(KFAC_ERR_NOMEM, "Fisher buffers for batch %d: out of memory",
                         net->max_batch);
    }
    *out = f;
    return KFAC_OK;
}

kfac_status kfac_fisher_vec(kfac_fisher *f, const kfac_net *net, const float *v, float *fv)
{
    return kfac_fisher_vec_rows(f, net, net ? net->batch : 0, v, fv);
}

/* Forward mode along v over the first B rows: each row's R-op, then
 * R(a_l) = phi'(s_l) R(s_l) with phi' from the recorded outputs (the next
 * layer's input, or z); R(z) ends in f->ra[L]. With gout (B x outputs,
 * the loss's gradient at the last pre-activation s_L), *slope <- the sum
 * over the rows of gout^T R(s_L): each example's derivative of its loss
 * along v (docs/algorithm.md §5.2). pre[l], where set, is layer l's part
 * along v (B x out_size), so only R(x)'s part is computed there. */
static void rop_forward(kfac_fisher *f, kfac_net *net, int B, const float *v, const float *const *pre,
                        const float *gout, double *slope)
{
    const int L = net->n_layers;
    for (int l = 0; l < L; l++) {
        kfac_layer *ly = &net->layers[l];
        float *ry = f->ra[l + 1];
        const float *rx = l > 0 ? f->ra[l] : NULL;
        if (pre && pre[l] && ly->type->rop_input) { /* the part along v given */
            memcpy(ry, pre[l], sizeof(float) * (size_t)B * (size_t)ly->out_size);
            if (rx)
                ly->type->rop_input(ly, net->theta + ly->offset, rx, B, ry);
        } else {
            ly->type->rop(ly, net->theta + ly->offset, v + ly->offset, rx, B, ry, net->scratch);
        }
        if (l == L - 1 && gout)
            *slope = kfac_dot_floats(gout, ry, (size_t)B * (size_t)ly->out_size);
        const float *a = l == L - 1 ? net->z : net->layers[l + 1].x;
        size_t lda = l == L - 1 ? (size_t)net->outputs : net->layers[l + 1].ldx;
        kfac_activation_types[ly->spec.activation].backward(ry, ly->out_size, a, (int)lda, B, ly->out_size);
    }
}

/* the arguments of a product over the first rows of the last pass */
static kfac_status check_rows(const kfac_fisher *f, const kfac_net *net_in, int rows, const char *who)
{
    if (!same_net(f, net_in))
        return kfac_fail(KFAC_ERR_SHAPE, "%s: the net is not the one the buffers were made for", who);
    if (net_in->batch < 1)
        return kfac_fail(KFAC_ERR_STATE, "%s before any forward pass", who);
    if (net_in->batch > f->max_batch)
        return kfac_fail(KFAC_ERR_SHAPE, "%s: batch %d above the buffers' %d", who, net_in->batch, f->max_batch);
    if (rows < 0 || rows > net_in->batch)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: %d rows outside [0, %d]", who, rows, net_in->batch);
    return KFAC_OK;
}

kfac_status kfac_fisher_forms(kfac_fisher *f, const kfac_net *net_in, int rows, const float *v1, const float *v2,
                              double s[3])
{
    double m[5];
    kfac_status st = kfac_fisher_model(f, net_in, rows, NULL, v1, NULL, v2, m);
    memcpy(s, m, sizeof(double) * 3);
    return st;
}

kfac_status kfac_fisher_model(kfac_fisher *f, const kfac_net *net_in, int rows, const float *gout, const float *v1,
                              const float *const *pre1, const float *v2, double s[5])
{
    if (!f || !net_in || !v1 || !s)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_fisher_forms: NULL argument");
    kfac_status st = check_rows(f, net_in, rows, "kfac_fisher_forms");
    if (st != KFAC_OK)
        return st;
    s[0] = s[1] = s[2] = s[3] = s[4] = 0.0;
    if (rows == 0) /* a process with none of the group's rows */
        return KFAC_OK;
    kfac_net *net = (kfac_net *)net_in; /* reads the recorded pass, writes the scratch */
    const int L = net->n_layers, dL = net->outputs;
    const size_t n = (size_t)rows * dL;
    const kfac_loss_type *lt = &kfac_loss_types[net->spec.loss];
    /* u = J v1, kept; H u */
    rop_forward(f, net, rows, v1, pre1, gout, &s[3]);
    memcpy(f->u, f->ra[L], sizeof(float) * n);
    lt->hess_vec(net->z, f->u, f->hu, rows, dL);
    double uu = 0.0, uw = 0.0, ww = 0.0;
    const float *u = f->u, *hu = f->hu, *w = f->ra[L];
#pragma omp parallel for simd schedule(static) reduction(+ : uu) if (n > KFAC_PAR_STREAM)
    for (size_t i = 0; i < n; i++)
        uu += (double)u[i] * hu[i];
    if (v2) { /* w = J v2: u^T H w = (H u)^T w, H symmetric */
        rop_forward(f, net, rows, v2, NULL, gout, &s[4]);
        lt->hess_vec(net->z, w, f->hu, rows, dL);
#pragma omp parallel for simd schedule(static) reduction(+ : uw, ww) if (n > KFAC_PAR_STREAM)
        for (size_t i = 0; i < n; i++) {
            uw += (double)u[i] * hu[i];
            ww += (double)w[i] * hu[i];
        }
    }
    s[0] = uu, s[1] = uw, s[2] = ww;
    return KFAC_OK;
}

kfac_status kfac_fisher_vec_rows(kfac_fisher *f, const kfac_net *net_in, int rows, const float *v, float *fv)
{
    if (!f || !net_in || !v || !fv)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_fisher_vec: NULL argument");
    kfac_status st = check_rows(f, net_in, rows, "kfac_fisher_vec");
    if (st != KFAC_OK)
        return st;
    if (rows == 0) { /* a process with none of the group's rows */
        memset(fv, 0, sizeof(float) * net_in->n_params);
        return KFAC_OK;
    }
    /* the passes read what the forward pass recorded and write only the
     * scratch and f's buffers */
    kfac_net *net = (kfac_net *)net_in;
    const int B = rows, L = net->n_layers;

    rop_forward(f, net, B, v, NULL, NULL, NULL);

    /* u = H_out(z_n) R(z_n) per example: the output gradient of the backward
     * pass, so F v = (1/B) sum_n J_n^T H_n J_n v */
    int dL = net->outputs;
    kfac_loss_types[net->spec.loss].hess_vec(net->z, f->ra[L], f->g[L - 1], B, dL);
    kfac_activation_types[net->layers[L - 1].spec.activation].backward(f->g[L - 1], dL, net->z, dL, B, dL);
    kfac_net_backprop(net, B, f->g, fv, 1.0f / B);
    return KFAC_OK;
}

/* Cost: per output k one backward pass over all B rows, then per example
 * J_n (d_L x P) from the recorded abar and those g in plain loops in
 * double, H_n from d_L Hessian-vector products, and F += J_n^T (H_n J_n)
 * at O(d_L P^2): in all O(B d_L P^2) time and O(P^2 + d_L P + d_L B U)
 * memory (U the layers' outputs per example). Reverse mode only, so it
 * checks the R-op's forward mode. */
kfac_status kfac_fisher_explicit(kfac_net *net, double *F)
{
    kfac_clear_error();
    if (!net || !F)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_fisher_explicit: NULL argument");
    if (net->batch < 1)
        return kfac_fail(KFAC_ERR_STATE, "kfac_fisher_explicit before any forward pass");
    const int B = net->batch, L = net->n_layers, dL = net->outputs;
    const size_t P = net->n_params;
    if (P > INT_MAX || (P > 0 && P > SIZE_MAX / sizeof(double) / P))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "explicit Fisher of %zu parameters: too large", P);
    size_t units = 0; /* every layer's outputs per example */
    for (int l = 0; l < L; l++)
        units += (size_t)net->layers[l].out_size;

    double *J = malloc(sizeof *J * (size_t)dL * P);     /* J_n: d_L x P, row k = dz_k/dtheta */
    double *HJ = malloc(sizeof *HJ * (size_t)dL * P);   /* H_n J_n: d_L x P */
    double *H = malloc(sizeof *H * (size_t)dL * dL);    /* H_n: d_L x d_L */
    float *gk = kfac_alloc_floats((size_t)dL * (size_t)B * units); /* output k's g, every layer */
    float *e = malloc(sizeof *e * (size_t)dL), *he = malloc(sizeof *he * (size_t)dL);
    kfac_status st = KFAC_OK;
    if (!J || !HJ || !H || !gk || !e || !he) {
        st = kfac_fail(KFAC_ERR_NOMEM, "explicit Fisher of %zu parameters: out of memory", P);
        goto done;
    }
    memset(F, 0, sizeof *F * P * P);
    const kfac_loss_type *lt = &kfac_loss_types[net->spec.loss];

    /* g of output k: dz_k/ds for every layer and row, from e_k at the
     * output through the last activation and the one backward loop */
    size_t loff[KFAC_MAX_LAYERS]; /* layer l's g within an output's block, per row */
    for (int l = 0, at = 0; l < L; at += net->layers[l].out_size, l++)
        loff[l] = (size_t)at;
    for (int k = 0; k < dL; k++) {
        float *g[KFAC_MAX_LAYERS], *base = gk + (size_t)k * (size_t)B * units;
        for (int l = 0; l < L; l++)
            g[l] = base + (size_t)B * loff[l];
        float *top = g[L - 1];
        memset(top, 0, sizeof(float) * (size_t)B * (size_t)dL);
        for (int n = 0; n < B; n++)
            top[(size_t)n * dL + k] = 1.0f;
        kfac_activation_types[net->layers[L - 1].spec.activation].backward(top, dL, net->z, dL, B, dL);
        kfac_net_backprop(net, B, g, NULL, 0.0f);
    }

    for (int n = 0; n < B; n++) {
        const float *zn = net->z + (size_t)n * dL;
        /* H_n column by column: H e_k */
        for (int k = 0; k < dL; k++) {
            memset(e, 0, sizeof *e * (size_t)dL);
            e[k] = 1.0f;
            lt->hess_vec(zn, e, he, 1, dL);
            for (int j = 0; j < dL; j++)
                H[(size_t)j * dL + k] = he[j];
        }
        /* J_n row k, layer by layer: dz_k/dW = sum over positions g abar^T */
        memset(J, 0, sizeof *J * (size_t)dL * P);
        for (int k = 0; k < dL; k++)
            for (int l = 0; l < L; l++) {
                const kfac_layer *ly = &net->layers[l];
                if (!ly->type->has_weights)
                    continue;
                int in = ly->d_in, d = ly->d_out, pos = ly->positions;
                double *Jl = J + (size_t)k * P + ly->offset;
                for (int t = 0; t < pos; t++) {
                    size_t row = (size_t)n * pos + t;
                    const float *g = gk + (size_t)k * (size_t)B * units + (size_t)B * loff[l] + row * d, *ab = ly->abar + row * in;
                    for (int i = 0; i < d; i++)
                        for (int j = 0; j < in; j++)
                            Jl[(size_t)i * in + j] += (double)g[i] * ab[j];
                }
            }
        /* HJ (d_L x P) <- H_n (d_L x d_L) * J_n (d_L x P) */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dL, (int)P, dL, 1.0, H, dL, J,
                    (int)P, 0.0, HJ, (int)P);
        /* F (P x P) += (1/B) J_n^T (P x d_L) * HJ (d_L x P) */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)P, (int)P, dL, 1.0 / B, J, (int)P,
                    HJ, (int)P, 1.0, F, (int)P);
    }
done:
    free(J);
    free(HJ);
    free(H);
    kfac_free_floats(gk);
    free(e);
    free(he);
    return st;
}
