/* dataset.c - transforms of an in-memory dataset: average pooling of the
 * images, which lets a network of a few hundred parameters (the exact
 * Fisher checks of docs/algorithm.md §7) see real Fashion-MNIST; and the data set a
 * network of a net file's `pool` reads. */
#include <stdlib.h>
#include <string.h>

#include "common.h"

kfac_status kfac_dataset_check(const kfac_dataset *d, int classes, const char *who)
{
    if (!d || !d->x || d->n < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: empty or NULL dataset", who);
    /* negative rows and cols can multiply to the features too */
    if (d->rows < 1 || d->cols < 1 || d->features < 1 || (long)d->rows * d->cols != d->features)
        return kfac_fail(KFAC_ERR_SHAPE, "%s: %dx%d images but %d features per example", who, d->rows, d->cols,
                         d->features);
    if (classes <= 0)
        return KFAC_OK;
    if (!d->labels)
        return kfac_fail(KFAC_ERR_SHAPE, "%s: a classifier needs labels", who);
    /* a label past the classes would be a one-hot write past its row */
    for (int i = 0; i < d->n; i++)
        if (d->labels[i] >= classes)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: label %d at index %d outside [0, %d)", who,
                             (int)d->labels[i], i, classes);
    return KFAC_OK;
}

kfac_status kfac_dataset_pool(const kfac_dataset *in, int factor, kfac_dataset *out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_dataset_pool: out is NULL");
    kfac_status st = kfac_dataset_check(in, 0, "kfac_dataset_pool");
    if (st != KFAC_OK)
        return st;
    if (factor < 1 || factor > 64)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "pool factor %d outside [1, 64]", factor);
    if (in->rows % factor || in->cols % factor)
        return kfac_fail(KFAC_ERR_SHAPE, "pool %d does not divide %dx%d images", factor, in->rows, in->cols);
    int rows = in->rows / factor, cols = in->cols / factor, f = rows * cols;
    float *x = kfac_alloc_floats((size_t)in->n * (size_t)f);
    uint8_t *labels = in->labels ? malloc((size_t)in->n) : NULL;
    if (!x || (in->labels && !labels)) {
        kfac_free_floats(x);
        free(labels);
        return kfac_fail(KFAC_ERR_NOMEM, "pooled dataset: out of memory");
    }
    float scale = 1.0f / (float)(factor * factor);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < in->n; n++) {
        const float *src = in->x + (size_t)n * in->features;
        float *dst = x + (size_t)n * f;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                float acc = 0.0f;
                for (int i = 0; i < factor; i++)
                    for (int j = 0; j < factor; j++)
                        acc += src[(size_t)(r * factor + i) * in->cols + c * factor + j];
                dst[r * cols + c] = acc * scale;
            }
    }
    if (labels)
        memcpy(labels, in->labels, (size_t)in->n);
    *out = *in;
    out->x = x;
    out->labels = labels;
    out->rows = rows;
    out->cols = cols;
    out->features = f;
    return KFAC_OK;
}

kfac_status kfac_dataset_for_net(const kfac_net_spec *spec, const kfac_dataset *d, kfac_dataset *pooled,
                                 const kfac_dataset **use)
{
    memset(pooled, 0, sizeof *pooled);
    *use = d;
    int f = spec->input_pool;
    /* data of `inputs` features is taken as it is (pooled already, or no
     * pooling asked); images that do not pool to `inputs` are left for
     * the caller's size check to name */
    if (f <= 1 || !d || !d->x || d->n < 1 || d->features == spec->inputs || d->rows % f || d->cols % f ||
        (d->rows / f) * (d->cols / f) != spec->inputs)
        return KFAC_OK;
    kfac_status st = kfac_dataset_pool(d, f, pooled);
    if (st == KFAC_OK)
        *use = pooled;
    return st;
}
