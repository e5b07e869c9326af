/* idx.c - reader of IDX files (every element type the format defines,
 * big-endian), gzipped or plain, into a kfac_dataset; the MNIST directory
 * layout and the choice between it and CSV files (csv.c); every malformed
 * input is a status with "<path>: problem". */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "zread.h"

/* Limits that reject absurd headers before anything large is allocated. */
#define IDX_MAX_EXAMPLES 100000000u
#define IDX_MAX_FEATURES 1000000u
#define IDX_MAX_BYTES (1ull << 31)

/* The element types of the IDX format: code, bytes, name. */
typedef struct idx_type {
    unsigned char code;
    unsigned char size;
    unsigned char integer;
    const char *name;
} idx_type;
static const idx_type idx_types[] = {{0x08, 1, 1, "unsigned byte"}, {0x09, 1, 1, "signed byte"},
                                     {0x0B, 2, 1, "short"},         {0x0C, 4, 1, "int"},
                                     {0x0D, 4, 0, "float"},         {0x0E, 8, 0, "double"}};
#define IDX_N_TYPES (int)(sizeof idx_types / sizeof *idx_types)
#define IDX_CHUNK (4u << 20)      /* bytes per read */
#define IDX_PATH_MAX 4096

typedef struct idx_file {
    const char *path;
    kfac_zread z;
    int open;
    int ndims;
    uint32_t dims[3];
    const idx_type *type;
    size_t count; /* dims[0] */
    size_t item;  /* elements per example: product of the other dims */
} idx_file;

/* Read up to len bytes; *got < len only at the end of the data. */
static kfac_status read_full(idx_file *f, void *buf, size_t len, size_t *got)
{
    return kfac_zread_read(&f->z, buf, len, got);
}

/* " (gzip stream ends early)" when the file ended inside a gzip stream. */
static const char *truncation_note(const idx_file *f)
{
    return f->z.cut ? " (gzip stream ends early)" : "";
}

static void dims_string(const idx_file *f, char *buf, size_t size)
{
    if (f->ndims == 3)
        snprintf(buf, size, "%u x %u x %u", f->dims[0], f->dims[1], f->dims[2]);
    else if (f->ndims == 2)
        snprintf(buf, size, "%u x %u", f->dims[0], f->dims[1]);
    else
        snprintf(buf, size, "%u", f->dims[0]);
}

/* Open `path` and validate its header as an IDX file of labels (one
 * dimension, an integer type: labels 1) or of images (two dimensions,
 * examples x features, or three, examples x rows x cols: labels 0). On
 * failure the file is closed. */
static kfac_status idx_open(idx_file *f, const char *path, int labels)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    int ndims = labels ? 1 : 3;
    kfac_status st = kfac_zread_open(&f->z, path);
    if (st)
        return st;
    f->open = 1;

    unsigned char head[4 + 4 * 3];
    size_t want = 4 + 4 * (size_t)ndims, got;
    st = read_full(f, head, 4, &got);
    if (st)
        goto fail;
    if (got == 0) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: empty file", path);
        goto fail;
    }
    if (got < 4) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: truncated header (%zu of %zu bytes)%s", path, got,
                       want, truncation_note(f));
        goto fail;
    }
    if (head[0] != 0 || head[1] != 0) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: bad magic 0x%02x%02x%02x%02x (not an IDX file)", path,
                       head[0], head[1], head[2], head[3]);
        goto fail;
    }
    for (int i = 0; i < IDX_N_TYPES; i++)
        if (idx_types[i].code == head[2])
            f->type = &idx_types[i];
    if (!f->type) {
        st = kfac_fail(KFAC_ERR_FORMAT,
                       "%s: element type 0x%02x is none of IDX's (0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x0e)", path,
                       head[2]);
        goto fail;
    }
    if (labels && !f->type->integer) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: element type 0x%02x (%s): labels need an integer type", path,
                       head[2], f->type->name);
        goto fail;
    }
    if (!labels && head[3] == 2)
        ndims = 2;
    if (head[3] != ndims) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: %d dimension%s, expected %s for %s", path, head[3],
                       KFAC_S(head[3]), labels ? "1" : "2 or 3", labels ? "labels" : "images");
        goto fail;
    }
    f->ndims = ndims;
    want = 4 + 4 * (size_t)ndims;
    st = read_full(f, head + 4, want - 4, &got);
    if (st)
        goto fail;
    if (got < want - 4) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: truncated header (%zu of %zu bytes)%s", path, 4 + got,
                       want, truncation_note(f));
        goto fail;
    }
    for (int i = 0; i < ndims; i++) {
        const unsigned char *b = head + 4 + 4 * i;
        f->dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    }

    char ds[64];
    dims_string(f, ds, sizeof ds);
    for (int i = 0; i < ndims; i++) {
        if (f->dims[i] == 0) {
            st = kfac_fail(KFAC_ERR_FORMAT, "%s: zero dimension in %s", path, ds);
            goto fail;
        }
    }
    /* Each factor is bounded before multiplying, so nothing overflows. */
    if (f->dims[0] > IDX_MAX_EXAMPLES) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: dimensions %s too large (more than %u examples)", path,
                       ds, IDX_MAX_EXAMPLES);
        goto fail;
    }
    uint64_t item = 1;
    for (int i = 1; i < ndims; i++) {
        if (f->dims[i] > IDX_MAX_FEATURES || item * f->dims[i] > IDX_MAX_FEATURES) {
            st = kfac_fail(KFAC_ERR_FORMAT,
                           "%s: dimensions %s too large (more than %u features per image)", path,
                           ds, IDX_MAX_FEATURES);
            goto fail;
        }
        item *= f->dims[i];
    }
    if ((uint64_t)f->dims[0] * item * f->type->size > IDX_MAX_BYTES) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: dimensions %s too large (%llu bytes, more than 2^31)",
                       path, ds, (unsigned long long)f->dims[0] * item * f->type->size);
        goto fail;
    }
    f->count = f->dims[0];
    f->item = (size_t)item;
    return KFAC_OK;

fail:
    kfac_zread_close(&f->z);
    f->open = 0;
    return st;
}

static void idx_close(idx_file *f)
{
    if (f->open)
        kfac_zread_close(&f->z);
    f->open = 0;
}

/* Read the count*item elements' bytes into a new buffer that grows only as
 * data arrives, so a header promising far more than the file holds costs
 * little memory. Then require the end of the file. */
static kfac_status idx_read_data(idx_file *f, unsigned char **out)
{
    size_t total = f->count * f->item * f->type->size, have = 0, cap = 0;
    unsigned char *buf = NULL;
    kfac_status st = KFAC_OK;

    while (have < total) {
        size_t got, want = KFAC_MIN(total - have, (size_t)IDX_CHUNK);
        if (have + want > cap) {
            size_t ncap = KFAC_MIN(total, KFAC_MAX(2 * cap, have + want));
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                st = kfac_fail(KFAC_ERR_NOMEM, "%s: cannot allocate %zu bytes", f->path, ncap);
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        st = read_full(f, buf + have, want, &got);
        if (st)
            goto fail;
        have += got;
        if (got < want) {
            char ds[64];
            dims_string(f, ds, sizeof ds);
            st = kfac_fail(KFAC_ERR_FORMAT, "%s: truncated data (%zu of %zu bytes for %s)%s",
                           f->path, have, total, ds, truncation_note(f));
            goto fail;
        }
    }

    /* Read to the end: counts the extra bytes and, for gzip, reaches the
     * CRC check, so a corrupt stream is reported as such. */
    unsigned char scratch[4096];
    size_t extra = 0, got;
    do {
        st = read_full(f, scratch, sizeof scratch, &got);
        if (st)
            goto fail;
        extra += got;
    } while (got == sizeof scratch);
    if (extra) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: %zu trailing byte%s after the %zu byte%s of data%s",
                       f->path, extra, KFAC_S(extra), total, KFAC_S(total), truncation_note(f));
        goto fail;
    }
    *out = buf;
    return KFAC_OK;

fail:
    free(buf);
    return st;
}

/* Element i of a type's big-endian bytes, as a double (exact for every
 * type but none wider than float's 24 bits matter here: the caller rounds
 * to float, or checks an integer label). */
static double element(const idx_type *t, const unsigned char *p, size_t i)
{
    p += i * t->size;
    uint64_t u = 0;
    for (int k = 0; k < t->size; k++)
        u = u << 8 | p[k];
    switch (t->code) {
    case 0x08:
        return (double)u;
    case 0x09:
        return (double)(int8_t)(uint8_t)u;
    case 0x0B:
        return (double)(int16_t)(uint16_t)u;
    case 0x0C:
        return (double)(int32_t)(uint32_t)u;
    case 0x0D: {
        uint32_t w = (uint32_t)u;
        float x;
        memcpy(&x, &w, sizeof x);
        return (double)x;
    }
    default: {
        double x;
        memcpy(&x, &u, sizeof x);
        return x;
    }
    }
}

kfac_status kfac_idx_load(const char *images_path, const char *labels_path, int classes,
                          kfac_dataset *out)
{
    kfac_clear_error();
    if (!images_path || !labels_path || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_idx_load: NULL argument");
    if (classes < 0 || classes > KFAC_MAX_CLASSES)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_idx_load: classes %d outside [0, %d]", classes,
                         KFAC_MAX_CLASSES);

    idx_file im = {0}, lb = {0};
    float *x = NULL;
    unsigned char *pixels = NULL, *raw_labels = NULL;
    uint8_t *labels = NULL;
    kfac_status st = idx_open(&im, images_path, 0);
    if (st)
        goto done;
    st = idx_open(&lb, labels_path, 1);
    if (st)
        goto done;
    /* Both headers agree before any data is read. */
    if (im.count != lb.count) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: %zu labels but %s has %zu images", labels_path,
                       lb.count, images_path, im.count);
        goto done;
    }
    st = idx_read_data(&im, &pixels);
    if (st)
        goto done;
    st = idx_read_data(&lb, &raw_labels);
    if (st)
        goto done;
    /* labels: integers in [0, classes), or for classes 0 in [0, 256) and
     * the largest plus one classes */
    int bound = classes ? classes : KFAC_MAX_CLASSES, top = 0;
    if (lb.type->size == 1 && lb.type->code == 0x08) {
        labels = raw_labels; /* bytes as they are */
        raw_labels = NULL;
    } else if (!(labels = malloc(lb.count))) {
        st = kfac_fail(KFAC_ERR_NOMEM, "%s: cannot allocate %zu labels", labels_path, lb.count);
        goto done;
    }
    for (size_t i = 0; i < lb.count; i++) {
        double v = element(lb.type, raw_labels ? raw_labels : labels, i); /* read before written */
        if (!(v >= 0 && v < bound)) {
            st = kfac_fail(KFAC_ERR_FORMAT, "%s: label %.0f at index %zu outside [0, %d)", labels_path, v, i,
                           bound);
            goto done;
        }
        labels[i] = (uint8_t)v;
        top = KFAC_MAX(top, (int)v + 1);
    }
    /* The pixels are all there: now the float array can take its size. */
    size_t total = im.count * im.item;
    x = kfac_alloc_floats(total);
    if (!x) {
        st = kfac_fail(KFAC_ERR_NOMEM, "%s: cannot allocate %zu floats", images_path, total);
        goto done;
    }
    if (im.type->code == 0x08) {
        /* unsigned bytes are intensities: scaled to [0, 1] */
        float scale[256]; /* a table: as exact as x / 255.0f, and cheaper */
        for (int v = 0; v < 256; v++)
            scale[v] = v / 255.0f;
        for (size_t i = 0; i < total; i++)
            x[i] = scale[pixels[i]];
    } else {
        /* every other type is taken as the values it holds; NaN, Inf
         * and doubles past float's range are refused here, not met as a
         * loss of NaN in training */
        for (size_t i = 0; i < total; i++) {
            double v = element(im.type, pixels, i);
            x[i] = (float)v;
            if (!isfinite(x[i])) {
                st = kfac_fail(KFAC_ERR_FORMAT, "%s: element %zu (example %zu) is %g, not a finite float",
                               images_path, i, i / im.item, v);
                goto done;
            }
        }
    }

    out->n = (int)im.count;
    out->rows = im.ndims == 3 ? (int)im.dims[1] : 1;
    out->cols = im.ndims == 3 ? (int)im.dims[2] : (int)im.dims[1];
    out->features = (int)im.item;
    out->classes = classes ? classes : top;
    out->x = x;
    out->labels = labels;
    x = NULL;
    labels = NULL;

done:
    idx_close(&im);
    idx_close(&lb);
    free(pixels);
    free(raw_labels);
    free(x);
    free(labels);
    return st;
}

/* `<dir>/<set>-<name>`, or with `.gz` if only that exists. */
static kfac_status find_file(const char *dir, const char *set, const char *name, char *path)
{
    int n = snprintf(path, IDX_PATH_MAX, "%s/%s-%s", dir, set, name);
    if (n < 0 || n + 4 > IDX_PATH_MAX)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: path too long", dir);
    if (access(path, F_OK) == 0)
        return KFAC_OK;
    int plain_errno = errno;
    strcat(path, ".gz");
    if (access(path, F_OK) == 0)
        return KFAC_OK;
    path[n] = '\0';
    return kfac_fail(KFAC_ERR_IO, "%s: %s (also tried %s.gz)", path, strerror(plain_errno), path);
}

/* The t10k images must have the train images' shape, not only their
 * size: 1x784 beside 28x28 holds the pixels in another order, or other
 * things. Only the train file's header is read; without a readable one
 * (a directory of t10k files alone, for kfac eval) there is nothing to
 * compare. */
static kfac_status same_shape(const char *dir, const char *images, const kfac_dataset *test)
{
    char train[IDX_PATH_MAX];
    idx_file f;
    if (find_file(dir, "train", "images-idx3-ubyte", train) != KFAC_OK || idx_open(&f, train, 0) != KFAC_OK) {
        kfac_clear_error();
        return KFAC_OK;
    }
    int rows = f.ndims == 3 ? (int)f.dims[1] : 1, cols = f.ndims == 3 ? (int)f.dims[2] : (int)f.dims[1];
    idx_close(&f);
    if (rows == test->rows && cols == test->cols)
        return KFAC_OK;
    return kfac_fail(KFAC_ERR_SHAPE, "%s: images of %dx%d, but those of %s are %dx%d", images, test->rows, test->cols,
                     train, rows, cols);
}

/* The IDX pair of `set` ("train" or "t10k") in dir. */
static kfac_status mnist_load(const char *dir, const char *set, int classes, kfac_dataset *out)
{
    char images[IDX_PATH_MAX], labels[IDX_PATH_MAX];
    kfac_status st = find_file(dir, set, "images-idx3-ubyte", images);
    if (st)
        return st;
    st = find_file(dir, set, "labels-idx1-ubyte", labels);
    if (st)
        return st;
    kfac_dataset d;
    if ((st = kfac_idx_load(images, labels, classes, &d)) != KFAC_OK)
        return st;
    if (strcmp(set, "t10k") == 0 && (st = same_shape(dir, images, &d)) != KFAC_OK) {
        kfac_dataset_free(&d);
        return st;
    }
    *out = d;
    return KFAC_OK;
}

kfac_status kfac_mnist_load(const char *dir, const char *set, kfac_dataset *out)
{
    kfac_clear_error();
    if (!dir || !set || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_mnist_load: NULL argument");
    if (strcmp(set, "train") != 0 && strcmp(set, "t10k") != 0)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_mnist_load: set '%s' is not train or t10k",
                         set);
    return mnist_load(dir, set, 10, out);
}

kfac_status kfac_data_load(const char *path, const char *set, int classes, int label_column, kfac_dataset *out)
{
    kfac_clear_error();
    if (!path || !set || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_data_load: NULL argument");
    int train = !strcmp(set, "train");
    if (!train && strcmp(set, "t10k") != 0 && strcmp(set, "test") != 0)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_data_load: set '%s' is not train, test or t10k", set);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return kfac_fail(KFAC_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) /* one CSV file: the whole of it, whichever set */
        return kfac_csv_load(path, classes, label_column, out);
    char csv[IDX_PATH_MAX], other[IDX_PATH_MAX];
    int n = snprintf(csv, sizeof csv, "%s/%s.csv", path, train ? "train" : "test");
    snprintf(other, sizeof other, "%s/%s.csv", path, train ? "test" : "train");
    if (n < 0 || n >= (int)sizeof csv)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: path too long", path);
    if (access(csv, F_OK) == 0)
        return kfac_csv_load(csv, classes, label_column, out);
    if (access(other, F_OK) == 0) /* a CSV directory missing one file */
        return kfac_fail(KFAC_ERR_IO, "%s: %s (the directory has %s.csv)", csv, strerror(ENOENT),
                         train ? "test" : "train");
    return mnist_load(path, train ? "train" : "t10k", classes, out);
}

void kfac_dataset_free(kfac_dataset *d)
{
    if (!d)
        return;
    kfac_free_floats(d->x);
    free(d->labels);
    memset(d, 0, sizeof *d);
}
