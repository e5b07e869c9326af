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
    int dims[KFAC_MAX_LAYERS + 1]; /* its d_0 .. d_L */
    int max_batch;
    float *ra[KFAC_MAX_LAYERS + 1]; /* ra[l]: R(a) of layer l's input, max_batch x d_l,
                                       l = 1..L-1; ra[L] = R(z), max_batch x d_L.
                                       ra[0] = R(input) = 0 is never stored */
    float *g[KFAC_MAX_LAYERS];      /* g[l]: backward signal at layer l's pre-activation,
                                       max_batch x d_{l+1}; g[L-1] first holds
                                       u = H_out R(z) */
};

void kfac_fisher_free(kfac_fisher *f)
{
    if (!f)
        return;
    for (int l = 0; l <= f->n_layers; l++)
        kfac_free_floats(f->ra[l]);
    for (int l = 0; l < f->n_layers; l++)
        kfac_free_floats(f->g[l]);
    free(f);
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
    memcpy(f->dims, net->dims, sizeof f->dims);
    size_t mb = (size_t)net->max_batch;
    int ok = 1;
    for (int l = 1; ok && l <= f->n_layers; l++)
        ok = (f->ra[l] = kfac_alloc_floats(mb * (size_t)f->dims[l])) != NULL;
    for (int l = 0; ok && l < f->n_layers; l++)
        ok = (f->g[l] = kfac_alloc_floats(mb * (size_t)f->dims[l + 1])) != NULL;
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

kfac_status kfac_fisher_vec_rows(kfac_fisher *f, const kfac_net *net, int rows, const float *v, float *fv)
{
    if (!f || !net || !v || !fv)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_fisher_vec: NULL argument");
    if (net->n_layers != f->n_layers ||
        memcmp(net->dims, f->dims, sizeof(int) * (size_t)(f->n_layers + 1)) != 0)
        return kfac_fail(KFAC_ERR_SHAPE, "kfac_fisher_vec: the net is not the one the buffers "
                                         "were made for");
    if (net->batch < 1)
        return kfac_fail(KFAC_ERR_STATE, "kfac_fisher_vec before any forward pass");
    if (net->batch > f->max_batch)
        return kfac_fail(KFAC_ERR_SHAPE, "kfac_fisher_vec: batch %d above the buffers' %d",
                         net->batch, f->max_batch);
    if (rows < 0 || rows > net->batch)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_fisher_vec: %d rows outside [0, %d]", rows, net->batch);
    if (rows == 0) { /* a process with none of the group's rows */
        memset(fv, 0, sizeof(float) * net->n_params);
        return KFAC_OK;
    }
    const int B = rows, L = net->n_layers;

    /* Forward mode along v: R(s_l) = V_l abar_{l-1} + W_l R(abar_{l-1}), where
     * R(abar) has a zero in the ones column, so only W_l[:, :d_{l-1}] meets
     * R(a); R(a_l) = phi'(s_l) R(s_l) */
    for (int l = 0; l < L; l++) {
        int in = net->dims[l] + 1, d = net->dims[l + 1];
        const float *vl = v + net->offset[l], *w = net->theta + net->offset[l];
        float *rs = f->ra[l + 1];
        /* R(s) (B x d) <- abar_l (B x in) * V_l^T (in x d) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, d, in, 1.0f, net->abar[l], in, vl,
                    in, 0.0f, rs, d);
        if (l > 0) {
            /* R(s) (B x d) += R(a_l) (B x d_l) * W_l[:, :d_l]^T (d_l x d);
             * ldb = in skips the bias column */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, d, in - 1, 1.0f, f->ra[l],
                        in - 1, w, in, 1.0f, rs, d);
        }
        /* phi' from the recorded outputs: the next layer's abar or z */
        const float *a = l == L - 1 ? net->z : net->abar[l + 1];
        int lda = l == L - 1 ? d : d + 1;
        kfac_activation_types[net->spec.layers[l].activation].backward(rs, d, a, lda, B, d);
    }

    /* u = H_out(z_n) R(z_n) per example: the output gradient of the backward
     * pass, so F v = (1/B) sum_n J_n^T H_n J_n v */
    int dL = net->dims[L];
    kfac_loss_types[net->spec.loss].hess_vec(net->z, f->ra[L], f->g[L - 1], B, dL);
    kfac_activation_types[net->spec.layers[L - 1].activation].backward(f->g[L - 1], dL, net->z, dL,
                                                                       B, dL);
    for (int l = L - 1; l >= 0; l--) {
        int in = net->dims[l] + 1, d = net->dims[l + 1];
        const float *w = net->theta + net->offset[l];
        /* FV_l (d x in) <- (1/B) g_l^T (d x B) * abar_l (B x in) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, in, B, 1.0f / B, f->g[l], d,
                    net->abar[l], in, 0.0f, fv + net->offset[l], in);
        if (l > 0) {
            /* g_{l-1} (B x d_l) <- g_l (B x d) * W_l[:, :d_l] (d x d_l);
             * lda = in skips the bias column */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in - 1, d, 1.0f, f->g[l], d,
                        w, in, 0.0f, f->g[l - 1], in - 1);
            kfac_activation_types[net->spec.layers[l - 1].activation].backward(
                f->g[l - 1], in - 1, net->abar[l], in, B, in - 1);
        }
    }
    return KFAC_OK;
}

/* Cost: per example, d_L back-propagations of O(P) each, H_n from d_L
 * Hessian-vector products, then F += J_n^T (H_n J_n) at O(d_L P^2): in all
 * O(B d_L P^2) time and O(P^2 + d_L P) memory. The Jacobian is built by
 * plain loops in double over one row of the recorded activations, a path
 * independent of the R-op's batched sgemm calls. */
kfac_status kfac_fisher_explicit(kfac_net *net, double *F)
{
    kfac_clear_error();
    if (!net || !F)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_fisher_explicit: NULL argument");
    if (net->batch < 1)
        return kfac_fail(KFAC_ERR_STATE, "kfac_fisher_explicit before any forward pass");
    const int B = net->batch, L = net->n_layers, dL = net->dims[L];
    const size_t P = net->n_params;
    if (P > INT_MAX || (P > 0 && P > SIZE_MAX / sizeof(double) / P))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "explicit Fisher of %zu parameters: too large", P);
    int wmax = 1, units = 0;
    for (int l = 0; l <= L; l++) {
        wmax = KFAC_MAX(wmax, net->dims[l]);
        units += l > 0 ? net->dims[l] : 0;
    }

    double *J = malloc(sizeof *J * (size_t)dL * P);     /* J_n: d_L x P, row k = dz_k/dtheta */
    double *HJ = malloc(sizeof *HJ * (size_t)dL * P);   /* H_n J_n: d_L x P */
    double *H = malloc(sizeof *H * (size_t)dL * dL);    /* H_n: d_L x d_L */
    double *gc = malloc(sizeof *gc * (size_t)wmax);     /* dz_k/ds_l, current layer */
    double *gn = malloc(sizeof *gn * (size_t)wmax);     /* dz_k/ds_{l-1} */
    float *dphi = malloc(sizeof *dphi * (size_t)units); /* phi'(s_l) of row n, layers packed */
    float *e = malloc(sizeof *e * (size_t)dL), *he = malloc(sizeof *he * (size_t)dL);
    kfac_status st = KFAC_OK;
    if (!J || !HJ || !H || !gc || !gn || !dphi || !e || !he) {
        st = kfac_fail(KFAC_ERR_NOMEM, "explicit Fisher of %zu parameters: out of memory", P);
        goto done;
    }
    memset(F, 0, sizeof *F * P * P);
    const kfac_loss_type *lt = &kfac_loss_types[net->spec.loss];

    for (int n = 0; n < B; n++) {
        const float *zn = net->z + (size_t)n * dL;
        /* phi'(s_l) for this row: the activation's backward applied to ones */
        for (int l = 0, at = 0; l < L; at += net->dims[l + 1], l++) {
            int d = net->dims[l + 1];
            const float *a = l == L - 1 ? zn : net->abar[l + 1] + (size_t)n * (d + 1);
            for (int i = 0; i < d; i++)
                dphi[at + i] = 1.0f;
            kfac_activation_types[net->spec.layers[l].activation].backward(dphi + at, d, a, d, 1,
                                                                           d);
        }
        /* H_n column by column: H e_k */
        for (int k = 0; k < dL; k++) {
            memset(e, 0, sizeof *e * (size_t)dL);
            e[k] = 1.0f;
            lt->hess_vec(zn, e, he, 1, dL);
            for (int j = 0; j < dL; j++)
                H[(size_t)j * dL + k] = he[j];
        }
        /* J_n row k: back-propagate e_k from the output of example n alone */
        for (int k = 0; k < dL; k++) {
            double *Jk = J + (size_t)k * P;
            int at = units - dL;
            for (int i = 0; i < dL; i++)
                gc[i] = i == k ? dphi[at + i] : 0.0;
            for (int l = L - 1; l >= 0; l--) {
                int in = net->dims[l] + 1, d = net->dims[l + 1];
                const float *ab = net->abar[l] + (size_t)n * in;
                const float *w = net->theta + net->offset[l];
                double *Jl = Jk + net->offset[l];
                for (int i = 0; i < d; i++) /* dz_k/dW_l = g abar^T */
                    for (int j = 0; j < in; j++)
                        Jl[(size_t)i * in + j] = gc[i] * ab[j];
                if (l == 0)
                    break;
                at -= in - 1;
                for (int j = 0; j < in - 1; j++) {
                    double acc = 0.0;
                    for (int i = 0; i < d; i++)
                        acc += gc[i] * w[(size_t)i * in + j];
                    gn[j] = acc * dphi[at + j];
                }
                double *t = gc;
                gc = gn;
                gn = t;
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
    free(gc);
    free(gn);
    free(dphi);
    free(e);
    free(he);
    return st;
}
