/* handles.c - the API of kfac_handles.h for bindings: the library's
 * structs allocated here, their fields read and set by name, data sets
 * from the caller's arrays, and the preconditioner's batch as arguments. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kfac_handles.h"

/* ----------------------------------------------------- network specs */

kfac_status kfac_net_spec_new(kfac_net_spec **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_spec_new: out is NULL");
    if (!(*out = malloc(sizeof **out)))
        return kfac_fail(KFAC_ERR_NOMEM, "kfac_net_spec_new: out of memory");
    kfac_net_spec_init(*out);
    return KFAC_OK;
}

void kfac_net_spec_free(kfac_net_spec *spec) { free(spec); }

/* the next layer's slot, or NULL (and the error set) past the last */
static kfac_layer_spec *next_layer(kfac_net_spec *spec, const char *fn)
{
    if (!spec) {
        kfac_fail(KFAC_ERR_INVALID_ARG, "%s: spec is NULL", fn);
        return NULL;
    }
    if (spec->n_layers < 0 || spec->n_layers >= KFAC_MAX_LAYERS) {
        kfac_fail(KFAC_ERR_INVALID_ARG, "a network has at most %d layers", KFAC_MAX_LAYERS);
        return NULL;
    }
    return &spec->layers[spec->n_layers];
}

static kfac_status check_units(const kfac_net_spec *spec, const char *what, int units)
{
    if (units < 1 || units > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: %s = %d is outside [1, 1000000]", spec->n_layers + 1, what,
                         units);
    return KFAC_OK;
}

static kfac_status check_activation(const kfac_net_spec *spec, kfac_activation activation)
{
    if (!kfac_activation_name(activation))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: activation %d is not one", spec->n_layers + 1,
                         (int)activation);
    return KFAC_OK;
}

/* a window's side or a stride (0 allowed: the default) in [lo, 64] */
static kfac_status check_window(const kfac_net_spec *spec, const char *what, int v, int lo)
{
    if (v < lo || v > 64)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: %s = %d is outside [%d, 64]", spec->n_layers + 1, what, v,
                         lo ? lo : 1);
    return KFAC_OK;
}

kfac_status kfac_net_spec_add_layer(kfac_net_spec *spec, int units, kfac_activation activation)
{
    kfac_clear_error();
    kfac_layer_spec *ls = next_layer(spec, "kfac_net_spec_add_layer");
    kfac_status st;
    if (!ls)
        return KFAC_ERR_INVALID_ARG; /* next_layer said why */
    if ((st = check_units(spec, "units", units)) != KFAC_OK || (st = check_activation(spec, activation)) != KFAC_OK)
        return st;
    memset(ls, 0, sizeof *ls);
    ls->kind = KFAC_LAYER_DENSE;
    ls->units = units;
    ls->activation = activation;
    spec->n_layers++;
    return KFAC_OK;
}

kfac_status kfac_net_spec_add_conv(kfac_net_spec *spec, int channels, int kernel_h, int kernel_w, int stride, int pad,
                                   kfac_activation activation)
{
    kfac_clear_error();
    kfac_layer_spec *ls = next_layer(spec, "kfac_net_spec_add_conv");
    kfac_status st;
    if (!ls)
        return KFAC_ERR_INVALID_ARG; /* next_layer said why */
    if ((st = check_units(spec, "channels", channels)) != KFAC_OK ||
        (st = check_window(spec, "kernel_h", kernel_h, 1)) != KFAC_OK ||
        (st = check_window(spec, "kernel_w", kernel_w, 1)) != KFAC_OK ||
        (st = check_window(spec, "stride", stride, 0)) != KFAC_OK || (st = check_activation(spec, activation)) != KFAC_OK)
        return st;
    if (pad != KFAC_PAD_SAME && (pad < 0 || pad > 63))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: pad = %d is neither KFAC_PAD_SAME nor in [0, 63]",
                         spec->n_layers + 1, pad);
    memset(ls, 0, sizeof *ls);
    ls->kind = KFAC_LAYER_CONV;
    ls->units = channels;
    ls->kernel_h = kernel_h;
    ls->kernel_w = kernel_w;
    ls->stride = stride;
    ls->pad = pad;
    ls->activation = activation;
    spec->n_layers++;
    return KFAC_OK;
}

kfac_status kfac_net_spec_add_pool(kfac_net_spec *spec, kfac_layer_kind kind, int size, int stride)
{
    kfac_clear_error();
    kfac_layer_spec *ls = next_layer(spec, "kfac_net_spec_add_pool");
    kfac_status st;
    if (!ls)
        return KFAC_ERR_INVALID_ARG; /* next_layer said why */
    if (kind != KFAC_LAYER_MAXPOOL && kind != KFAC_LAYER_AVGPOOL)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: kind %d is not a pooling (KFAC_LAYER_MAXPOOL, "
                         "KFAC_LAYER_AVGPOOL)", spec->n_layers + 1, (int)kind);
    if ((st = check_window(spec, "size", size, 1)) != KFAC_OK || (st = check_window(spec, "stride", stride, 0)) != KFAC_OK)
        return st;
    memset(ls, 0, sizeof *ls);
    ls->kind = kind;
    ls->kernel_h = ls->kernel_w = size;
    ls->stride = stride;
    ls->activation = KFAC_ACT_LINEAR;
    spec->n_layers++;
    return KFAC_OK;
}

kfac_status kfac_net_spec_set(kfac_net_spec *spec, const char *name, const char *value)
{
    kfac_clear_error();
    if (!spec || !name || !value)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_spec_set: NULL argument");
    return kfac_netfile_set_net_key(spec, name, value);
}

/* snprintf into buf, INVALID_ARG when the text does not fit */
static kfac_status put(char *buf, size_t size, const char *name, const char *fmt, ...) KFAC_PRINTF(4, 5);
static kfac_status put(char *buf, size_t size, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: a buffer of %zu bytes is too small", name, size);
    return KFAC_OK;
}

/* "units.3" -> 3 if the prefix is `what`, else -1 (or -2: a bad index) */
static int indexed(const char *name, const char *what, int count)
{
    size_t n = strlen(what);
    if (strncmp(name, what, n) != 0 || name[n] != '.')
        return -1;
    char *end;
    long l = strtol(name + n + 1, &end, 10);
    if (end == name + n + 1 || *end != '\0' || l < 0 || l >= count)
        return -2;
    return (int)l;
}

kfac_status kfac_net_spec_get(const kfac_net_spec *spec, const char *name, char *buf, size_t size)
{
    kfac_clear_error();
    if (!spec || !name || !buf || size < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_spec_get: NULL argument");
    int nl = spec->n_layers < 0 ? 0 : spec->n_layers > KFAC_MAX_LAYERS ? KFAC_MAX_LAYERS : spec->n_layers;
    const char *s;
    int l;
    if (!strcmp(name, "inputs"))
        return put(buf, size, name, "%d", spec->inputs);
    if (!strcmp(name, "layers"))
        return put(buf, size, name, "%d", nl);
    if (!strcmp(name, "loss"))
        return put(buf, size, name, "%s", (s = kfac_loss_name(spec->loss)) ? s : "?");
    if (!strcmp(name, "init"))
        return put(buf, size, name, "%s", (s = kfac_init_name(spec->init)) ? s : "?");
    if (!strcmp(name, "init_sigma"))
        return put(buf, size, name, "%.9g", (double)spec->init_sigma);
    if (!strcmp(name, "sparse_count"))
        return put(buf, size, name, "%d", spec->sparse_count);
    if (!strcmp(name, "pool"))
        return put(buf, size, name, "%d", spec->input_pool);
    if (!strcmp(name, "shape"))
        return spec->input_h || spec->input_w || spec->input_c
                   ? put(buf, size, name, "%dx%dx%d", spec->input_h, spec->input_w, spec->input_c)
                   : put(buf, size, name, "%s", "");
    /* layer l's fields: their names, and which kinds have them */
    static const char *const layer_fields[] = {"kind", "units", "activation", "kernel", "stride", "pad"};
    enum { F_KIND, F_UNITS, F_ACT, F_KERNEL, F_STRIDE, F_PAD, F_N };
    for (int f = 0; f < F_N; f++) {
        if ((l = indexed(name, layer_fields[f], nl)) == -1)
            continue;
        if (l == -2)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "'%s': the network has %d layer%s (0 to %d)", name, nl,
                             KFAC_S(nl), nl - 1);
        const kfac_layer_spec *ls = &spec->layers[l];
        int conv = ls->kind == KFAC_LAYER_CONV, pool = ls->kind == KFAC_LAYER_MAXPOOL || ls->kind == KFAC_LAYER_AVGPOOL;
        if ((f == F_UNITS && pool) || ((f == F_KERNEL || f == F_STRIDE) && !conv && !pool) || (f == F_PAD && !conv))
            return kfac_fail(KFAC_ERR_INVALID_ARG, "'%s': layer %d is a %s layer, which has no %s", name, l,
                             (s = kfac_layer_kind_name(ls->kind)) ? s : "?", layer_fields[f]);
        switch (f) {
        case F_KIND:
            return put(buf, size, name, "%s", (s = kfac_layer_kind_name(ls->kind)) ? s : "?");
        case F_UNITS:
            return put(buf, size, name, "%d", ls->units);
        case F_ACT:
            return put(buf, size, name, "%s", (s = kfac_activation_name(ls->activation)) ? s : "?");
        case F_KERNEL:
            return put(buf, size, name, "%dx%d", ls->kernel_h, ls->kernel_w);
        case F_STRIDE:
            return put(buf, size, name, "%d", ls->stride ? ls->stride : conv ? 1 : ls->kernel_h);
        default:
            return ls->pad == KFAC_PAD_SAME ? put(buf, size, name, "%s", "same") : put(buf, size, name, "%d", ls->pad);
        }
    }
    return kfac_fail(KFAC_ERR_INVALID_ARG,
                     "unknown network field '%s' (inputs, shape, layers, loss, init, init_sigma, sparse_count, pool, "
                     "kind.L, units.L, activation.L, kernel.L, stride.L, pad.L)",
                     name);
}

/* ------------------------------------------------- training parameters */

kfac_status kfac_train_params_new(kfac_train_params **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_train_params_new: out is NULL");
    if (!(*out = malloc(sizeof **out)))
        return kfac_fail(KFAC_ERR_NOMEM, "kfac_train_params_new: out of memory");
    kfac_train_params_init(*out);
    return KFAC_OK;
}

void kfac_train_params_free(kfac_train_params *p) { free(p); }

kfac_status kfac_train_params_clone(const kfac_train_params *p, kfac_train_params **out)
{
    kfac_clear_error();
    if (!p || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_train_params_clone: NULL argument");
    if (!(*out = malloc(sizeof **out)))
        return kfac_fail(KFAC_ERR_NOMEM, "kfac_train_params_clone: out of memory");
    **out = *p;
    return KFAC_OK;
}

kfac_status kfac_param_info_get(int i, const char *field, char *buf, size_t size)
{
    kfac_clear_error();
    if (!field || !buf || size < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_param_info_get: NULL argument");
    kfac_param_info info;
    kfac_status st = kfac_param_get_info(i, &info);
    if (st != KFAC_OK)
        return st;
    if (!strcmp(field, "name"))
        return put(buf, size, field, "%s.%s", info.section, info.key);
    const char *v = !strcmp(field, "section") ? info.section
                    : !strcmp(field, "key")   ? info.key
                    : !strcmp(field, "flag")  ? info.flag
                    : !strcmp(field, "arg")   ? info.arg
                    : !strcmp(field, "resets") ? (info.resets ? info.resets : "")
                    : !strcmp(field, "doc")   ? info.doc
                    : !strcmp(field, "range") ? info.range
                    : !strcmp(field, "default") ? info.def
                                                : NULL;
    if (!v)
        return kfac_fail(KFAC_ERR_INVALID_ARG,
                         "unknown parameter field '%s' (name, section, key, flag, arg, resets, doc, range, default)",
                         field);
    return put(buf, size, field, "%s", v);
}

/* ------------------------------------------------------------ data sets */

kfac_status kfac_dataset_new(kfac_dataset **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_dataset_new: out is NULL");
    if (!(*out = calloc(1, sizeof **out)))
        return kfac_fail(KFAC_ERR_NOMEM, "kfac_dataset_new: out of memory");
    return KFAC_OK;
}

void kfac_dataset_delete(kfac_dataset *d)
{
    if (!d)
        return;
    kfac_dataset_free(d);
    free(d);
}

kfac_status kfac_dataset_from_arrays(const float *x, const int *labels, int n, int features, int rows, int cols,
                                     int classes, kfac_dataset **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_dataset_from_arrays: out is NULL");
    *out = NULL;
    if (!x)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_dataset_from_arrays: x is NULL");
    if (n < 1 || features < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "a data set of %d example%s of %d feature%s: both must be 1 or more", n,
                         KFAC_S(n), features, KFAC_S(features));
    if (rows == 0 && cols == 0)
        rows = 1, cols = features;
    if (rows < 1 || cols < 1 || (long long)rows * cols != features)
        return kfac_fail(KFAC_ERR_SHAPE, "images of %d x %d are not %d feature%s", rows, cols, features,
                         KFAC_S(features));
    if (classes < 0 || classes > KFAC_MAX_CLASSES)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "classes = %d is outside [0, %d]", classes, KFAC_MAX_CLASSES);
    if ((size_t)n > SIZE_MAX / sizeof(float) / (size_t)features)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%d x %d features are too many", n, features);
    size_t total = (size_t)n * (size_t)features;
    for (size_t k = 0; k < total; k++)
        if (!isfinite(x[k]))
            return kfac_fail(KFAC_ERR_INVALID_ARG, "x[%zu][%zu] = %g is not finite", k / (size_t)features,
                             k % (size_t)features, (double)x[k]);
    int max_label = -1;
    int limit = classes > 0 ? classes : KFAC_MAX_CLASSES;
    for (int i = 0; labels && i < n; i++) {
        if (labels[i] < 0 || labels[i] >= limit)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "labels[%d] = %d is outside [0, %d)", i, labels[i], limit);
        if (labels[i] > max_label)
            max_label = labels[i];
    }
    kfac_dataset *d = calloc(1, sizeof *d);
    float *xs = kfac_alloc_floats(total);
    uint8_t *ls = labels ? malloc((size_t)n) : NULL;
    if (!d || !xs || (labels && !ls)) {
        free(d), kfac_free_floats(xs), free(ls);
        return kfac_fail(KFAC_ERR_NOMEM, "a data set of %d x %d: out of memory", n, features);
    }
    memcpy(xs, x, total * sizeof *xs);
    for (int i = 0; labels && i < n; i++)
        ls[i] = (uint8_t)labels[i];
    d->n = n;
    d->features = features;
    d->rows = rows;
    d->cols = cols;
    d->classes = labels ? (classes > 0 ? classes : max_label + 1) : 0;
    d->x = xs;
    d->labels = ls;
    *out = d;
    return KFAC_OK;
}

int kfac_dataset_n(const kfac_dataset *d) { return d ? d->n : 0; }
int kfac_dataset_features(const kfac_dataset *d) { return d ? d->features : 0; }
int kfac_dataset_classes(const kfac_dataset *d) { return d ? d->classes : 0; }
int kfac_dataset_rows(const kfac_dataset *d) { return d ? d->rows : 0; }
int kfac_dataset_cols(const kfac_dataset *d) { return d ? d->cols : 0; }
const float *kfac_dataset_x(const kfac_dataset *d) { return d ? d->x : NULL; }
const uint8_t *kfac_dataset_labels(const kfac_dataset *d) { return d ? d->labels : NULL; }

/* ------------------------------------------------------------ generator */

kfac_status kfac_rng_new(uint64_t seed, kfac_rng **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_rng_new: out is NULL");
    if (!(*out = malloc(sizeof **out)))
        return kfac_fail(KFAC_ERR_NOMEM, "kfac_rng_new: out of memory");
    kfac_rng_seed(*out, seed);
    return KFAC_OK;
}

void kfac_rng_free(kfac_rng *r) { free(r); }

/* ------------------------------------------------------------- results */

/* A struct's fields by name: scalars, and arrays of KFAC_MAX_LAYERS read
 * as "name.l" below a count field. */
typedef enum { F_INT, F_LONG, F_DOUBLE } field_type;
typedef struct field_def {
    const char *name;
    size_t offset;
    field_type type;
    int array; /* 1: KFAC_MAX_LAYERS entries, "name.l" */
} field_def;

#define ES(f, t) {#f, offsetof(kfac_epoch_stats, f), t, 0}
static const field_def epoch_fields[] = {
    ES(epoch, F_INT),       ES(seconds, F_DOUBLE),  ES(train_loss, F_DOUBLE), ES(test_loss, F_DOUBLE),
    ES(test_acc, F_DOUBLE), ES(val_n, F_INT),       ES(val_loss, F_DOUBLE),   ES(val_acc, F_DOUBLE),
    ES(best_epoch, F_INT),  ES(early_stop, F_INT),
};
#define KS(f, t) {#f, offsetof(kfac_kfac_stats, f), t, 0}
#define KA(f, t) {#f, offsetof(kfac_kfac_stats, f), t, 1}
static const field_def kfac_fields[] = {
    KS(seconds_stats, F_DOUBLE), KS(seconds_invert, F_DOUBLE), KS(seconds_precond, F_DOUBLE),
    KS(seconds_fvp, F_DOUBLE),   KS(stats_rounds, F_LONG),     KS(inversions, F_LONG),
    KS(fallbacks, F_INT),        KS(damping_retries, F_LONG),  KS(steps_rejected, F_LONG),
    KS(damping, F_DOUBLE),       KS(nu, F_DOUBLE),             KS(alpha, F_DOUBLE),
    KS(mu, F_DOUBLE),            KS(rho, F_DOUBLE),            KS(n_layers, F_INT),
    KA(rank_a, F_INT),           KA(rank_g, F_INT),            KA(batch_form, F_INT),
    KA(flops_batch, F_DOUBLE),   KA(flops_weights, F_DOUBLE),
};

static kfac_status field_get(const field_def *defs, int count, const char *what, const void *base, int n_array,
                             const char *name, double *out)
{
    kfac_clear_error();
    if (!base || !name || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: NULL argument", what);
    for (int i = 0; i < count; i++) {
        const field_def *f = &defs[i];
        size_t elem = 0;
        if (f->array) {
            int l = indexed(name, f->name, n_array);
            if (l == -1)
                continue;
            if (l == -2)
                return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: '%s' needs a layer 0 to %d", what, name, n_array - 1);
            elem = (size_t)l;
        } else if (strcmp(name, f->name) != 0) {
            continue;
        }
        const char *p = (const char *)base + f->offset;
        switch (f->type) {
        case F_INT:
            *out = ((const int *)p)[elem];
            break;
        case F_LONG:
            *out = (double)((const long *)p)[elem];
            break;
        case F_DOUBLE:
            *out = ((const double *)p)[elem];
            break;
        }
        return KFAC_OK;
    }
    char list[512];
    size_t n = 0;
    list[0] = '\0';
    for (int i = 0; i < count && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s%s", i ? ", " : "", defs[i].name,
                              defs[i].array ? ".L" : "");
    return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: unknown field '%s' (%s)", what, name, list);
}

#define N_EPOCH_FIELDS ((int)(sizeof epoch_fields / sizeof *epoch_fields))
#define N_KFAC_FIELDS ((int)(sizeof kfac_fields / sizeof *kfac_fields))

kfac_status kfac_epoch_stats_new(kfac_epoch_stats **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_epoch_stats_new: out is NULL");
    if (!(*out = calloc(1, sizeof **out)))
        return kfac_fail(KFAC_ERR_NOMEM, "kfac_epoch_stats_new: out of memory");
    return KFAC_OK;
}

void kfac_epoch_stats_free(kfac_epoch_stats *s) { free(s); }

kfac_status kfac_epoch_stats_get(const kfac_epoch_stats *s, const char *name, double *out)
{
    return field_get(epoch_fields, N_EPOCH_FIELDS, "kfac_epoch_stats_get", s, 0, name, out);
}

const char *kfac_epoch_stats_field(int i) { return i >= 0 && i < N_EPOCH_FIELDS ? epoch_fields[i].name : NULL; }

kfac_status kfac_kfac_stats_new(kfac_kfac_stats **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_kfac_stats_new: out is NULL");
    if (!(*out = calloc(1, sizeof **out)))
        return kfac_fail(KFAC_ERR_NOMEM, "kfac_kfac_stats_new: out of memory");
    return KFAC_OK;
}

void kfac_kfac_stats_free(kfac_kfac_stats *s) { free(s); }

kfac_status kfac_kfac_stats_get(const kfac_kfac_stats *s, const char *name, double *out)
{
    int nl = !s ? 0 : s->n_layers < 0 ? 0 : s->n_layers > KFAC_MAX_LAYERS ? KFAC_MAX_LAYERS : s->n_layers;
    return field_get(kfac_fields, N_KFAC_FIELDS, "kfac_kfac_stats_get", s, nl, name, out);
}

const char *kfac_kfac_stats_field(int i) { return i >= 0 && i < N_KFAC_FIELDS ? kfac_fields[i].name : NULL; }

/* --------------------------------------- K-FAC for your own network */

kfac_status kfac_precond_new_params(int n_layers, const int *d_in, const int *d_out, int max_rows,
                                    const kfac_train_params *p, kfac_precond **out)
{
    return kfac_precond_new_params_positions(n_layers, d_in, d_out, NULL, max_rows, p, out);
}

kfac_status kfac_precond_new_params_positions(int n_layers, const int *d_in, const int *d_out, const int *positions,
                                              int max_rows, const kfac_train_params *p, kfac_precond **out)
{
    kfac_clear_error();
    kfac_train_params tp;
    if (p)
        tp = *p;
    else
        kfac_train_params_init(&tp);
    kfac_status st = kfac_train_params_validate(&tp);
    if (st != KFAC_OK)
        return st;
    /* the first-order settings K-FAC's run takes, as the trainer resolves them */
    tp.optimizer = KFAC_OPT_KFAC;
    kfac_optim_params op;
    kfac_train_params_resolve(&tp, &op);
    return kfac_precond_new_positions(n_layers, d_in, d_out, positions, max_rows, &op, &tp.kfac, out);
}

kfac_status kfac_precond_step_arrays(kfac_precond *pc, int rows, float *const *weights, const float *const *grads,
                                     const float *const *abar, const float *const *g_sampled, const float *const *g,
                                     double loss)
{
    kfac_precond_batch b = {rows, weights, grads, abar, g_sampled, loss, g};
    return kfac_precond_step(pc, &b);
}
