/* test_idx.c - the IDX reader on small files the tests write (plain and
 * gzipped, good and broken in every way) and on the real Fashion-MNIST. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "kfac.h"
#include "tests.h"

/* ------------------------------------------------------------ helpers */

/* An IDX file image being built in memory. */
typedef struct blob {
    unsigned char b[16384];
    size_t n;
} blob;

static void blob_add(blob *o, const void *p, size_t n)
{
    ck_assert_uint_le(o->n + n, sizeof o->b);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void blob_u32(blob *o, uint32_t v)
{
    unsigned char be[4] = {v >> 24, v >> 16, v >> 8, v};
    blob_add(o, be, 4);
}

/* Header of an unsigned-byte IDX file: 00 00 08 ndims, then the dims. */
static void blob_header(blob *o, int ndims, const uint32_t *dims)
{
    o->n = 0;
    unsigned char magic[4] = {0, 0, 0x08, (unsigned char)ndims};
    blob_add(o, magic, 4);
    for (int i = 0; i < ndims; i++)
        blob_u32(o, dims[i]);
}

static void images_blob(blob *o, uint32_t n, uint32_t rows, uint32_t cols, const unsigned char *px)
{
    uint32_t dims[3] = {n, rows, cols};
    blob_header(o, 3, dims);
    blob_add(o, px, (size_t)n * rows * cols);
}

static void labels_blob(blob *o, uint32_t n, const unsigned char *lab)
{
    blob_header(o, 1, &n);
    blob_add(o, lab, n);
}

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", test_tmpdir(), name);
}

static void write_raw(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile g = gzopen(path, "wb");
    ck_assert_msg(g != NULL, "cannot create %s", path);
    if (len)
        ck_assert_int_eq(gzwrite(g, data, (unsigned)len), (int)len);
    ck_assert_int_eq(gzclose(g), Z_OK);
}

static void write_blob(const char *path, const blob *o, int gz)
{
    if (gz)
        write_gz(path, o->b, o->n);
    else
        write_raw(path, o->b, o->n);
}

/* The small good data set: 3 images of 2x2 and their labels. */
static const unsigned char good_px[12] = {0, 255, 51, 102, 1, 2, 3, 4, 254, 128, 7, 0};
static const unsigned char good_lab[3] = {0, 9, 3};

/* Write the good images and labels as `<stem>-images` / `<stem>-labels`
 * (plus .gz if gz) into the scratch dir; paths returned in img and lab. */
static void write_good(const char *stem, int gz, char *img, char *lab, size_t size)
{
    char name[128];
    blob o;
    snprintf(name, sizeof name, "%s-images%s", stem, gz ? ".gz" : "");
    tmp_path(img, size, name);
    images_blob(&o, 3, 2, 2, good_px);
    write_blob(img, &o, gz);
    snprintf(name, sizeof name, "%s-labels%s", stem, gz ? ".gz" : "");
    tmp_path(lab, size, name);
    labels_blob(&o, 3, good_lab);
    write_blob(lab, &o, gz);
}

static void sentinel(kfac_dataset *d) { memset(d, 0xA5, sizeof *d); }

/* Loading must fail with `want`, leave *out as it was, and say `path` and
 * `word` in the detail. */
static void expect_fail(const char *img, const char *lab, int classes, kfac_status want,
                        const char *path, const char *word)
{
    kfac_dataset d, before;
    sentinel(&d);
    memcpy(&before, &d, sizeof d);
    kfac_status st = kfac_idx_load(img, lab, classes, &d);
    const char *msg = kfac_last_error();
    ck_assert_msg(st == want, "status '%s', expected '%s' (detail: %s)", kfac_strerror(st),
                  kfac_strerror(want), msg);
    ck_assert_msg(memcmp(&d, &before, sizeof d) == 0, "*out modified on failure (%s)", msg);
    ck_assert_msg(strstr(msg, path) != NULL, "detail '%s' does not name '%s'", msg, path);
    ck_assert_msg(strstr(msg, word) != NULL, "detail '%s' does not say '%s'", msg, word);
}

static void assert_same_dataset(const kfac_dataset *a, const kfac_dataset *b)
{
    ck_assert_int_eq(a->n, b->n);
    ck_assert_int_eq(a->features, b->features);
    ck_assert_int_eq(a->rows, b->rows);
    ck_assert_int_eq(a->cols, b->cols);
    ck_assert_int_eq(a->classes, b->classes);
    ck_assert(memcmp(a->x, b->x, (size_t)a->n * a->features * sizeof *a->x) == 0);
    ck_assert(memcmp(a->labels, b->labels, (size_t)a->n) == 0);
}

/* Check the good set as loaded. */
static void assert_good(const kfac_dataset *d)
{
    ck_assert_int_eq(d->n, 3);
    ck_assert_int_eq(d->rows, 2);
    ck_assert_int_eq(d->cols, 2);
    ck_assert_int_eq(d->features, 4);
    ck_assert_int_eq(d->classes, 10);
    ck_assert_ptr_nonnull(d->x);
    ck_assert_ptr_nonnull(d->labels);
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq_tol(d->x[i], good_px[i] / 255.0f, 1e-7f);
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(d->labels[i], good_lab[i]);
}

/* ------------------------------------------------------- good files */

START_TEST(test_plain_gz_identical)
{
    char img[512], lab[512], gimg[512], glab[512];
    write_good("same", 0, img, lab, sizeof img);
    write_good("same", 1, gimg, glab, sizeof gimg);
    kfac_dataset a, b;
    ck_assert_int_eq(kfac_idx_load(img, lab, 10, &a), KFAC_OK);
    ck_assert_int_eq(kfac_idx_load(gimg, glab, 10, &b), KFAC_OK);
    assert_good(&a);
    assert_same_dataset(&a, &b);
    /* mixed: gzipped images, plain labels */
    kfac_dataset c;
    ck_assert_int_eq(kfac_idx_load(gimg, lab, 10, &c), KFAC_OK);
    assert_same_dataset(&a, &c);
    kfac_dataset_free(&a);
    kfac_dataset_free(&b);
    kfac_dataset_free(&c);
}
END_TEST

START_TEST(test_scaling)
{
    /* one 16x16 image holding every byte value once */
    unsigned char px[256], lab[1] = {1};
    for (int i = 0; i < 256; i++)
        px[i] = (unsigned char)i;
    char img[512], lab_path[512];
    blob o;
    tmp_path(img, sizeof img, "scale-images");
    tmp_path(lab_path, sizeof lab_path, "scale-labels");
    images_blob(&o, 1, 16, 16, px);
    write_blob(img, &o, 0);
    labels_blob(&o, 1, lab);
    write_blob(lab_path, &o, 0);

    kfac_dataset d;
    ck_assert_int_eq(kfac_idx_load(img, lab_path, 2, &d), KFAC_OK);
    ck_assert_int_eq(d.features, 256);
    ck_assert_int_eq(d.classes, 2);
    ck_assert_float_eq(d.x[0], 0.0f);
    ck_assert_float_eq(d.x[255], 1.0f);
    ck_assert_float_eq_tol(d.x[51], 0.2f, 1e-7f);
    ck_assert_float_eq_tol(d.x[128], 128.0f / 255.0f, 1e-7f);
    for (int i = 1; i < 256; i++)
        ck_assert_float_gt(d.x[i], d.x[i - 1]);
    kfac_dataset_free(&d);
}
END_TEST

/* A directory holding the four standard file names, plain or gzipped. */
static void make_mnist_dir(const char *dir, int gz, const unsigned char *lab)
{
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    const char *sets[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        char path[512];
        blob o;
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, sets[s], gz ? ".gz" : "");
        images_blob(&o, 3, 2, 2, good_px);
        write_blob(path, &o, gz);
        snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, sets[s], gz ? ".gz" : "");
        labels_blob(&o, 3, lab);
        write_blob(path, &o, gz);
    }
}

START_TEST(test_mnist_dir)
{
    int gz = _i;
    char dir[512];
    tmp_path(dir, sizeof dir, gz ? "mnist-gz" : "mnist-plain");
    make_mnist_dir(dir, gz, good_lab);
    for (int s = 0; s < 2; s++) {
        kfac_dataset d;
        kfac_status st = kfac_mnist_load(dir, s ? "t10k" : "train", &d);
        ck_assert_msg(st == KFAC_OK, "%s", kfac_last_error());
        assert_good(&d);
        kfac_dataset_free(&d);
    }
}
END_TEST

START_TEST(test_mnist_prefers_plain)
{
    /* different labels in the .gz files show which one was read */
    static const unsigned char other_lab[3] = {5, 5, 5};
    char dir[512], gzdir[512], cmd[1200];
    tmp_path(dir, sizeof dir, "mnist-both");
    tmp_path(gzdir, sizeof gzdir, "mnist-both-gz");
    make_mnist_dir(dir, 0, good_lab);
    make_mnist_dir(gzdir, 1, other_lab);
    snprintf(cmd, sizeof cmd, "mv '%s'/*.gz '%s'/", gzdir, dir);
    ck_assert_int_eq(system(cmd), 0);

    kfac_dataset d;
    ck_assert_int_eq(kfac_mnist_load(dir, "train", &d), KFAC_OK);
    assert_good(&d);
    kfac_dataset_free(&d);
}
END_TEST


/* ------------------------------------------------- every element type */

/* The IDX element types: code, bytes. */
static const struct {
    unsigned char code;
    int size;
    const char *name;
} types[6] = {{0x08, 1, "ubyte"}, {0x09, 1, "sbyte"}, {0x0B, 2, "short"},
              {0x0C, 4, "int"},   {0x0D, 4, "float"}, {0x0E, 8, "double"}};

/* v as a big-endian element of type t */
static void blob_element(blob *o, int t, double v)
{
    unsigned char be[8];
    uint64_t u = 0;
    switch (types[t].code) {
    case 0x08: u = (uint8_t)v; break;
    case 0x09: u = (uint8_t)(int8_t)v; break;
    case 0x0B: u = (uint16_t)(int16_t)v; break;
    case 0x0C: u = (uint32_t)(int32_t)v; break;
    case 0x0D: {
        float f = (float)v;
        uint32_t w;
        memcpy(&w, &f, 4);
        u = w;
        break;
    }
    default:
        memcpy(&u, &v, 8);
    }
    for (int k = 0; k < types[t].size; k++)
        be[k] = (unsigned char)(u >> (8 * (types[t].size - 1 - k)));
    blob_add(o, be, (size_t)types[t].size);
}

/* An IDX file of type t: 00 00 code ndims, dims, then values. */
static void typed_blob(blob *o, int t, int ndims, const uint32_t *dims, const double *v, size_t count)
{
    o->n = 0;
    unsigned char magic[4] = {0, 0, types[t].code, (unsigned char)ndims};
    blob_add(o, magic, 4);
    for (int i = 0; i < ndims; i++)
        blob_u32(o, dims[i]);
    for (size_t i = 0; i < count; i++)
        blob_element(o, t, v[i]);
}

/* Images of each element type (2 of 2x3, gzipped for odd types), labels
 * of each integer type: the values as the README says, unsigned bytes
 * divided by 255 and every other type as stored. */
START_TEST(test_element_types)
{
    int t = _i;
    /* values every type can hold (negative ones only for the signed) */
    static const double ubyte_v[12] = {0, 255, 51, 7, 128, 1, 2, 3, 4, 5, 6, 200};
    static const double signed_v[12] = {-128, 127, -1, 0, 5, -7, 100, -100, 3, 2, 1, 0};
    static const double wide_v[12] = {-30000, 32767, 12345, -1, 0, 7, 1000, -2000, 3, 4, 5, 6};
    static const double int_v[12] = {-2000000000, 2000000000, 16777216, -16777217, 1, 0, 9, -9, 65536, 3, 2, 1};
    static const double real_v[12] = {0.1, -2.5, 1e-3, 3.14159, 1e30, -1e-30, 0, 1, 2, 3, 4, 0.5};
    const double *v = t == 0 ? ubyte_v : t == 1 ? signed_v : t == 2 ? wide_v : t == 3 ? int_v : real_v;
    uint32_t dims[3] = {2, 2, 3};
    char img[512], lab[512], name[64];
    blob o;
    typed_blob(&o, t, 3, dims, v, 12);
    snprintf(name, sizeof name, "type-%s-images%s", types[t].name, t % 2 ? ".gz" : "");
    tmp_path(img, sizeof img, name);
    write_blob(img, &o, t % 2);
    /* labels of the same type where it is an integer type, else int */
    int lt = types[t].code <= 0x0C ? t : 3;
    double lv[2] = {2, 1};
    typed_blob(&o, lt, 1, dims, lv, 2);
    snprintf(name, sizeof name, "type-%s-labels", types[t].name);
    tmp_path(lab, sizeof lab, name);
    write_blob(lab, &o, 0);

    kfac_dataset d;
    kfac_status st = kfac_idx_load(img, lab, 3, &d);
    ck_assert_msg(st == KFAC_OK, "%s: %s", types[t].name, kfac_last_error());
    ck_assert_int_eq(d.n, 2);
    ck_assert_int_eq(d.rows, 2);
    ck_assert_int_eq(d.cols, 3);
    ck_assert_int_eq(d.features, 6);
    ck_assert_int_eq(d.classes, 3);
    ck_assert_uint_eq(d.labels[0], 2);
    ck_assert_uint_eq(d.labels[1], 1);
    for (int i = 0; i < 12; i++) {
        float want = t == 0 ? (float)(v[i] / 255.0) : (float)v[i];
        if (t == 0)
            ck_assert_float_eq_tol(d.x[i], want, 1e-7f);
        else
            ck_assert_msg(d.x[i] == want, "%s: element %d is %.9g, not %.9g", types[t].name, i, d.x[i], want);
    }
    kfac_dataset_free(&d);

    /* a label past the classes is named with its index, in every type */
    double bad[2] = {1, 3};
    typed_blob(&o, lt, 1, dims, bad, 2);
    write_blob(lab, &o, 0);
    expect_fail(img, lab, 3, KFAC_ERR_FORMAT, lab, "label 3 at index 1 outside [0, 3)");
    if (types[lt].code != 0x08) { /* and a negative one */
        bad[1] = -2;
        typed_blob(&o, lt, 1, dims, bad, 2);
        write_blob(lab, &o, 0);
        expect_fail(img, lab, 3, KFAC_ERR_FORMAT, lab, "label -2 at index 1 outside [0, 3)");
    }
    /* truncated data counts the type's bytes */
    typed_blob(&o, t, 3, dims, v, 12);
    o.n -= 1;
    write_blob(img, &o, 0);
    char want[64];
    snprintf(want, sizeof want, "of %d bytes for 2 x 2 x 3", 12 * types[t].size);
    typed_blob(&o, lt, 1, dims, lv, 2);
    write_blob(lab, &o, 0);
    expect_fail(img, lab, 3, KFAC_ERR_FORMAT, img, want);
}
END_TEST

/* Two-dimensional images (examples x features), and classes taken from
 * the labels when 0 is given. */
START_TEST(test_two_dims_and_classes)
{
    uint32_t dims[2] = {3, 4}, n = 3;
    double v[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, lv[3] = {0, 25, 7};
    char img[512], lab[512];
    blob o;
    typed_blob(&o, 4, 2, dims, v, 12);
    tmp_path(img, sizeof img, "twodim-images");
    write_blob(img, &o, 0);
    typed_blob(&o, 2, 1, &n, lv, 3);
    tmp_path(lab, sizeof lab, "twodim-labels");
    write_blob(lab, &o, 0);
    kfac_dataset d;
    ck_assert_int_eq(kfac_idx_load(img, lab, 0, &d), KFAC_OK);
    ck_assert_int_eq(d.rows, 1);
    ck_assert_int_eq(d.cols, 4);
    ck_assert_int_eq(d.features, 4);
    ck_assert_int_eq(d.classes, 26); /* the largest label plus one */
    ck_assert_float_eq(d.x[11], 12.0f);
    kfac_dataset_free(&d);
    ck_assert_int_eq(kfac_idx_load(img, lab, 26, &d), KFAC_OK);
    kfac_dataset_free(&d);
    expect_fail(img, lab, 25, KFAC_ERR_FORMAT, lab, "label 25 at index 1 outside [0, 25)");
    /* NaN and Inf floats, and a double past float's range, are refused */
    static const struct {
        int type;
        double v;
        const char *text;
    } bad[3] = {{4, NAN, "is nan"}, {4, INFINITY, "is inf"}, {5, 1e300, "is 1e+300"}};
    for (int k = 0; k < 3; k++) {
        v[6] = bad[k].v;
        typed_blob(&o, bad[k].type, 2, dims, v, 12);
        write_blob(img, &o, 0);
        expect_fail(img, lab, 26, KFAC_ERR_FORMAT, img, "element 6 (example 1)");
        ck_assert_msg(strstr(kfac_last_error(), bad[k].text), "%s", kfac_last_error());
    }
}
END_TEST

/* ------------------------------------------------------- real data */

START_TEST(test_real_data)
{
    const char *set = _i ? "t10k" : "train";
    int want_n = _i ? 10000 : 60000;
    kfac_dataset d;
    kfac_status st = kfac_mnist_load(test_data_dir(), set, &d);
    ck_assert_msg(st == KFAC_OK, "%s: %s", kfac_strerror(st), kfac_last_error());
    ck_assert_int_eq(d.n, want_n);
    ck_assert_int_eq(d.rows, 28);
    ck_assert_int_eq(d.cols, 28);
    ck_assert_int_eq(d.features, 784);
    ck_assert_int_eq(d.classes, 10);

    int seen[10] = {0};
    for (int i = 0; i < d.n; i++) {
        ck_assert_uint_lt(d.labels[i], 10);
        seen[d.labels[i]]++;
    }
    for (int c = 0; c < 10; c++)
        ck_assert_msg(seen[c] > 0, "class %d absent from %s", c, set);

    float lo = 1.0f, hi = 0.0f;
    size_t total = (size_t)d.n * d.features;
    for (size_t i = 0; i < total; i++) {
        lo = d.x[i] < lo ? d.x[i] : lo;
        hi = d.x[i] > hi ? d.x[i] : hi;
    }
    ck_assert_float_ge(lo, 0.0f);
    ck_assert_float_eq(hi, 1.0f);
    kfac_dataset_free(&d);
}
END_TEST

/* ------------------------------------------------------- bad files */

/* Good labels for `n` examples at `name` (used beside broken images). */
static void labels_for(const char *name, uint32_t n, char *path, size_t size)
{
    unsigned char lab[4096];
    ck_assert_uint_le(n, sizeof lab);
    for (uint32_t i = 0; i < n; i++)
        lab[i] = (unsigned char)(i % 10);
    blob o;
    labels_blob(&o, n, lab);
    tmp_path(path, size, name);
    write_blob(path, &o, 0);
}

START_TEST(test_empty)
{
    int gz = _i;
    char img[512], lab[512];
    tmp_path(img, sizeof img, gz ? "empty-images.gz" : "empty-images");
    if (gz)
        write_gz(img, "", 0);
    else
        write_raw(img, "", 0);
    labels_for("empty-labels", 3, lab, sizeof lab);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "empty");
    /* an empty labels file after good images */
    char good_img[512], good_lab_path[512];
    write_good(gz ? "empty-lab-gz" : "empty-lab", gz, good_img, good_lab_path, sizeof good_img);
    expect_fail(good_img, img, 10, KFAC_ERR_FORMAT, img, "empty");
}
END_TEST

START_TEST(test_truncated_header)
{
    /* cut inside the magic, inside the dims of images and of labels */
    static const size_t cut[3] = {2, 9, 6};
    char img[512], lab[512], name[64];
    write_good("trunchead", 0, img, lab, sizeof img);
    blob o;
    if (_i < 2) {
        images_blob(&o, 3, 2, 2, good_px);
        o.n = cut[_i];
        snprintf(name, sizeof name, "trunchead-%d-images", _i);
        tmp_path(img, sizeof img, name);
        write_blob(img, &o, _i);
        expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "truncated header");
    } else {
        labels_blob(&o, 3, good_lab);
        o.n = cut[_i];
        tmp_path(lab, sizeof lab, "trunchead-2-labels.gz");
        write_blob(lab, &o, 1);
        expect_fail(img, lab, 10, KFAC_ERR_FORMAT, lab, "truncated header");
    }
}
END_TEST

START_TEST(test_truncated_data)
{
    int gz = _i;
    char img[512], lab[512];
    blob o;
    images_blob(&o, 3, 2, 2, good_px);
    o.n -= 5;
    tmp_path(img, sizeof img, gz ? "truncdata-images.gz" : "truncdata-images");
    write_blob(img, &o, gz);
    labels_for("truncdata-labels", 3, lab, sizeof lab);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "truncated data");
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "7 of 12"));

    /* labels cut short after good images */
    char good_img[512], good_lab_path[512];
    write_good(gz ? "truncdata-gz" : "truncdata", gz, good_img, good_lab_path, sizeof good_img);
    labels_blob(&o, 3, good_lab);
    o.n -= 1;
    tmp_path(lab, sizeof lab, gz ? "truncdata-short-labels.gz" : "truncdata-short-labels");
    write_blob(lab, &o, gz);
    expect_fail(good_img, lab, 10, KFAC_ERR_FORMAT, lab, "truncated data");
}
END_TEST

START_TEST(test_bad_magic)
{
    char img[512], lab[512];
    blob o;
    images_blob(&o, 3, 2, 2, good_px);
    o.b[0] = 0x1f; /* neither IDX nor a valid gzip header */
    tmp_path(img, sizeof img, "magic-images");
    write_blob(img, &o, 0);
    labels_for("magic-labels", 3, lab, sizeof lab);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "magic");

    /* a text file */
    tmp_path(img, sizeof img, "magic-text");
    write_raw(img, "hello, world\n", 13);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "magic");
}
END_TEST

START_TEST(test_bad_type)
{
    char img[512], lab[512];
    blob o;
    images_blob(&o, 3, 2, 2, good_px);
    o.b[2] = 0x0A; /* between signed byte and short: none of IDX's */
    tmp_path(img, sizeof img, "type-images.gz");
    write_blob(img, &o, 1);
    labels_for("type-labels", 3, lab, sizeof lab);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "type 0x0a is none of IDX's");
    /* labels must be integers: float and double label files are refused */
    for (int k = 0; k < 2; k++) {
        char flab[512];
        labels_blob(&o, 3, good_lab);
        o.b[2] = k ? 0x0E : 0x0D;
        tmp_path(flab, sizeof flab, k ? "type-labels-double" : "type-labels-float");
        write_blob(flab, &o, 0);
        char img_ok[512], lab_ok[512];
        write_good("type-ok", 0, img_ok, lab_ok, sizeof img_ok);
        expect_fail(img_ok, flab, 10, KFAC_ERR_FORMAT, flab, "labels need an integer type");
    }
}
END_TEST

START_TEST(test_bad_ndims)
{
    char img[512], lab[512];
    write_good("ndims", 0, img, lab, sizeof img);
    /* labels given as the images file: 1 dimension where 3 are needed */
    expect_fail(lab, lab, 10, KFAC_ERR_FORMAT, lab, "dimension");
    /* images given as the labels file */
    expect_fail(img, img, 10, KFAC_ERR_FORMAT, img, "dimension");
}
END_TEST

START_TEST(test_zero_dim)
{
    char img[512], lab[512];
    uint32_t dims[3] = {3, 0, 2};
    blob o;
    blob_header(&o, 3, dims);
    tmp_path(img, sizeof img, "zero-images");
    write_blob(img, &o, 0);
    labels_for("zero-labels", 3, lab, sizeof lab);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "zero");
}
END_TEST

START_TEST(test_too_large)
{
    /* overflowing product, too many features, too many bytes in all, too
     * many examples; the files hold only a header */
    static const uint32_t dims[4][3] = {{0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu},
                                        {10, 2000, 1000},
                                        {50000000, 100, 100},
                                        {100000001, 1, 1}};
    char img[512], lab[512], name[64];
    blob o;
    blob_header(&o, 3, dims[_i]);
    snprintf(name, sizeof name, "large-%d-images", _i);
    tmp_path(img, sizeof img, name);
    write_blob(img, &o, 0);
    labels_for("large-labels", 3, lab, sizeof lab);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "too large");
    char ds[64];
    snprintf(ds, sizeof ds, "%u x %u x %u", dims[_i][0], dims[_i][1], dims[_i][2]);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), ds));
}
END_TEST

/* Bytes of address space in use, from /proc/self/statm. */
static size_t vm_bytes(void)
{
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

START_TEST(test_absurd_count)
{
    /* headers within the limits (1.5 GB of images) on files of a few
     * bytes: the reader must notice the truncation without allocating the
     * promised gigabytes, which a 256 MiB address-space cap would refuse */
    uint32_t n = 2000000, dims[3] = {n, 28, 28};
    unsigned char some[16] = {1, 2, 3};
    char img[512], lab[512];
    blob o;
    blob_header(&o, 3, dims);
    blob_add(&o, some, sizeof some);
    tmp_path(img, sizeof img, "absurd-images.gz");
    write_blob(img, &o, 1);
    blob_header(&o, 1, &n);
    blob_add(&o, some, sizeof some);
    tmp_path(lab, sizeof lab, "absurd-labels");
    write_blob(lab, &o, 0);

    struct rlimit old, cap;
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
    cap = old;
    rlim_t want = (rlim_t)vm_bytes() + ((rlim_t)256 << 20);
    if (cap.rlim_cur == RLIM_INFINITY || cap.rlim_cur > want)
        cap.rlim_cur = want;
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &cap), 0);
    kfac_dataset d, before;
    sentinel(&d);
    memcpy(&before, &d, sizeof d);
    kfac_status st = kfac_idx_load(img, lab, 10, &d);
    /* lowering the soft limit only, so it can be restored */
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
    ck_assert_msg(st == KFAC_ERR_FORMAT, "status '%s': %s", kfac_strerror(st), kfac_last_error());
    ck_assert(memcmp(&d, &before, sizeof d) == 0);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), img));
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "truncated data"));
}
END_TEST

START_TEST(test_count_mismatch)
{
    char img[512], lab[512], good_lab_path[512];
    write_good("mismatch", 1, img, good_lab_path, sizeof img);
    labels_for("mismatch-labels", 4, lab, sizeof lab);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, lab, "4 labels");
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "3 images"));
}
END_TEST

START_TEST(test_label_range)
{
    static const unsigned char lab_bytes[5] = {0, 9, 1, 12, 3};
    unsigned char px[5 * 4] = {0};
    char img[512], lab[512];
    blob o;
    images_blob(&o, 5, 2, 2, px);
    tmp_path(img, sizeof img, "range-images");
    write_blob(img, &o, 0);
    labels_blob(&o, 5, lab_bytes);
    tmp_path(lab, sizeof lab, "range-labels-idx1-ubyte.gz");
    write_blob(lab, &o, 1);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, lab, "label 12 at index 3 outside [0, 10)");

    /* the bound is `classes`: 13 classes admit the label 12 */
    kfac_dataset d;
    ck_assert_int_eq(kfac_idx_load(img, lab, 13, &d), KFAC_OK);
    ck_assert_int_eq(d.classes, 13);
    ck_assert_uint_eq(d.labels[3], 12);
    kfac_dataset_free(&d);
    /* and 12 classes do not */
    expect_fail(img, lab, 12, KFAC_ERR_FORMAT, lab, "label 12 at index 3 outside [0, 12)");
}
END_TEST

START_TEST(test_corrupt_gzip)
{
    /* 100 images of 8x8 of varied bytes; flip bytes at a quarter, half and
     * three quarters of the compressed stream, or cut its end off */
    enum { N = 100, PIX = N * 64 };
    static unsigned char px[PIX];
    uint32_t s = 12345;
    for (int i = 0; i < PIX; i++) {
        s = s * 1103515245u + 12345u;
        px[i] = (unsigned char)((s >> 16) % 23 * 11);
    }
    char img[512], lab[512], name[64];
    blob o;
    images_blob(&o, N, 8, 8, px);
    snprintf(name, sizeof name, "corrupt-%d-images.gz", _i);
    tmp_path(img, sizeof img, name);
    write_blob(img, &o, 1);
    labels_for("corrupt-labels", N, lab, sizeof lab);

    /* the intact file loads */
    kfac_dataset d;
    ck_assert_int_eq(kfac_idx_load(img, lab, 10, &d), KFAC_OK);
    kfac_dataset_free(&d);

    static unsigned char raw[2 * PIX];
    FILE *f = fopen(img, "rb");
    ck_assert_ptr_nonnull(f);
    size_t len = fread(raw, 1, sizeof raw, f);
    fclose(f);
    ck_assert_uint_gt(len, 100);
    if (_i == 3) {
        len -= 12;
    } else {
        size_t at = len * (size_t)(_i + 1) / 4;
        for (size_t k = at; k < at + 4; k++)
            raw[k] ^= 0x5A;
    }
    write_raw(img, raw, len);
    expect_fail(img, lab, 10, KFAC_ERR_FORMAT, img, "gzip");
}
END_TEST

START_TEST(test_trailing_bytes)
{
    int gz = _i;
    char img[512], lab[512], good_img[512], good_lab_path[512];
    write_good(gz ? "trailing-gz" : "trailing", gz, good_img, good_lab_path, sizeof good_img);
    blob o;
    images_blob(&o, 3, 2, 2, good_px);
    blob_add(&o, "xyz", 3);
    tmp_path(img, sizeof img, gz ? "trailing-images-extra.gz" : "trailing-images-extra");
    write_blob(img, &o, gz);
    expect_fail(img, good_lab_path, 10, KFAC_ERR_FORMAT, img, "3 trailing bytes after the 12 bytes of data");

    labels_blob(&o, 3, good_lab);
    blob_add(&o, "\0", 1);
    tmp_path(lab, sizeof lab, gz ? "trailing-labels-extra.gz" : "trailing-labels-extra");
    write_blob(lab, &o, gz);
    expect_fail(good_img, lab, 10, KFAC_ERR_FORMAT, lab, "1 trailing byte after the 3 bytes of data");
}
END_TEST

/* zlib's gzread drops whatever follows a gzip stream when it is not
 * another gzip member: a file with bytes after its stream loaded as if
 * they were not there. They are refused, counted and the file named;
 * members one after the other (as `cat a.gz b.gz` makes) are still one
 * file's data. */
START_TEST(test_gzip_trailing_garbage)
{
    char img[512], lab[512], good_img[512], good_lab_path[512];
    write_good("gzjunk", 1, good_img, good_lab_path, sizeof good_img);
    static unsigned char raw[4096];
    FILE *f = fopen(good_img, "rb");
    ck_assert_ptr_nonnull(f);
    size_t len = fread(raw, 1, sizeof raw, f);
    fclose(f);
    ck_assert_uint_gt(len, 20);
    static const struct {
        const char *junk;
        size_t n;
        const char *msg;
    } cases[] = {
        {"junk", 4, "4 bytes after the end of the gzip stream (not gzip)"},
        {"\n", 1, "1 byte after the end of the gzip stream (not gzip)"},
        {"\0\0\0\0\0\0\0\0", 8, "8 bytes after the end of the gzip stream (not gzip)"},
        {"\x1f", 1, "1 byte after the end of the gzip stream (not gzip)"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        static unsigned char buf[4200];
        memcpy(buf, raw, len);
        memcpy(buf + len, cases[c].junk, cases[c].n);
        snprintf(img, sizeof img, "%s/gzjunk-%zu-images.gz", test_tmpdir(), c);
        write_raw(img, buf, len + cases[c].n);
        expect_fail(img, good_lab_path, 10, KFAC_ERR_FORMAT, img, cases[c].msg);
    }
    /* in the labels too */
    blob o;
    labels_blob(&o, 3, good_lab);
    tmp_path(lab, sizeof lab, "gzjunk-text-labels.gz");
    write_gz(lab, o.b, o.n);
    f = fopen(lab, "ab");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs("trailing text", f), 0);
    fclose(f);
    expect_fail(good_img, lab, 10, KFAC_ERR_FORMAT, lab, "13 bytes after the end of the gzip stream (not gzip)");

    /* two members: the images' header in one, the pixels in the next */
    images_blob(&o, 3, 2, 2, good_px);
    char a[512], b[512];
    tmp_path(a, sizeof a, "gzjunk-part-a.gz");
    tmp_path(b, sizeof b, "gzjunk-part-b.gz");
    write_gz(a, o.b, 16);
    write_gz(b, o.b + 16, o.n - 16);
    static unsigned char two[8192];
    size_t n = 0;
    const char *parts[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        f = fopen(parts[k], "rb");
        ck_assert_ptr_nonnull(f);
        n += fread(two + n, 1, sizeof two - n, f);
        fclose(f);
    }
    tmp_path(img, sizeof img, "gzjunk-two-members-images.gz");
    write_raw(img, two, n);
    kfac_dataset d;
    ck_assert_msg(kfac_idx_load(img, good_lab_path, 10, &d) == KFAC_OK, "%s", kfac_last_error());
    assert_good(&d);
    kfac_dataset_free(&d);
}
END_TEST

/* A t10k set must have the train images' shape, not only their size:
 * 4 images of 1x784 (a 2-D file) beside 28x28 ones were accepted because
 * both are 784 features (another size, 14x14, is refused here too). kfac_data_load and kfac_mnist_load refuse it,
 * naming both files; the same shape loads, and so does a directory of
 * t10k files alone (kfac eval's). */
START_TEST(test_shapes_differ)
{
    static unsigned char px[4 * 784], lab[4] = {1, 2, 3, 4};
    for (int i = 0; i < 4 * 784; i++)
        px[i] = (unsigned char)(i * 7);
    static const struct {
        int train_dims, test_dims; /* 3: 28x28 (4x7 for 2); 2: one row */
        uint32_t test_rows, test_cols;
        const char *msg;
    } cases[] = {
        {3, 2, 1, 784, "images of 1x784, but those of "},
        {3, 3, 784, 1, "images of 784x1, but those of "},
        {3, 3, 56, 14, "images of 56x14, but those of "},
        {3, 3, 14, 14, "images of 14x14, but those of "}, /* another size too */
        {2, 3, 28, 28, "images of 28x28, but those of "},
        {3, 3, 28, 28, NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char dir[512], path[700], name[64];
        snprintf(name, sizeof name, "shapes-%zu", c);
        tmp_path(dir, sizeof dir, name);
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        static blob o;
        uint32_t train_dims[3] = {4, 28, 28}, train_flat[2] = {4, 784};
        blob_header(&o, cases[c].train_dims, cases[c].train_dims == 3 ? train_dims : train_flat);
        blob_add(&o, px, sizeof px);
        snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
        write_blob(path, &o, 1);
        uint32_t test_dims[3] = {4, cases[c].test_rows, cases[c].test_cols}, test_flat[2] = {4, 784};
        blob_header(&o, cases[c].test_dims, cases[c].test_dims == 3 ? test_dims : test_flat);
        blob_add(&o, px, (size_t)4 * (cases[c].test_dims == 3 ? cases[c].test_rows * cases[c].test_cols : 784));
        snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte", dir);
        write_blob(path, &o, 0);
        const char *sets[2] = {"train", "t10k"};
        for (int k = 0; k < 2; k++) {
            char lp[700];
            labels_blob(&o, 4, lab);
            snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte", dir, sets[k]);
            write_blob(lp, &o, 0);
        }
        kfac_dataset d, before;
        ck_assert_int_eq(kfac_data_load(dir, "train", 10, 1, &d), KFAC_OK);
        kfac_dataset_free(&d);
        sentinel(&d);
        memcpy(&before, &d, sizeof d);
        kfac_status st = kfac_data_load(dir, "test", 10, 1, &d);
        if (!cases[c].msg) {
            ck_assert_msg(st == KFAC_OK, "%s", kfac_last_error());
            kfac_dataset_free(&d);
            continue;
        }
        char train_name[700];
        snprintf(train_name, sizeof train_name, "%s/train-images-idx3-ubyte.gz are %s", dir,
                 cases[c].train_dims == 3 ? "28x28" : "1x784");
        ck_assert_int_eq(st, KFAC_ERR_SHAPE);
        ck_assert(memcmp(&d, &before, sizeof d) == 0);
        const char *msg = kfac_last_error();
        ck_assert_msg(strstr(msg, path) == msg && strstr(msg, cases[c].msg) && strstr(msg, train_name),
                      "case %zu: %s", c, msg);
        ck_assert_int_eq(kfac_mnist_load(dir, "t10k", &d), KFAC_ERR_SHAPE);
        ck_assert(memcmp(&d, &before, sizeof d) == 0);
        /* without the train images there is nothing to compare */
        snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
        ck_assert_int_eq(unlink(path), 0);
        ck_assert_msg(kfac_data_load(dir, "test", 10, 1, &d) == KFAC_OK, "%s", kfac_last_error());
        kfac_dataset_free(&d);
    }
}
END_TEST

START_TEST(test_missing_file)
{
    char img[512], lab[512], nope[512];
    write_good("missing", 0, img, lab, sizeof img);
    tmp_path(nope, sizeof nope, "missing-nothing-here");
    expect_fail(nope, lab, 10, KFAC_ERR_IO, nope, "cannot open");
    expect_fail(img, nope, 10, KFAC_ERR_IO, nope, "cannot open");

    /* a directory without the files: both names tried are given */
    char dir[512], want[600];
    tmp_path(dir, sizeof dir, "missing-dir");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    kfac_dataset d, before;
    sentinel(&d);
    memcpy(&before, &d, sizeof d);
    ck_assert_int_eq(kfac_mnist_load(dir, "t10k", &d), KFAC_ERR_IO);
    ck_assert(memcmp(&d, &before, sizeof d) == 0);
    snprintf(want, sizeof want, "%s/t10k-images-idx3-ubyte", dir);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), want));
    strcat(want, ".gz");
    ck_assert_msg(strstr(kfac_last_error(), want) != NULL, "%s", kfac_last_error());

    /* images present, labels absent */
    char path[600];
    blob o;
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", dir);
    images_blob(&o, 3, 2, 2, good_px);
    write_blob(path, &o, 1);
    ck_assert_int_eq(kfac_mnist_load(dir, "t10k", &d), KFAC_ERR_IO);
    ck_assert(memcmp(&d, &before, sizeof d) == 0);
    snprintf(want, sizeof want, "%s/t10k-labels-idx1-ubyte.gz", dir);
    ck_assert_msg(strstr(kfac_last_error(), want) != NULL, "%s", kfac_last_error());
}
END_TEST

START_TEST(test_invalid_args)
{
    char img[512], lab[512];
    write_good("args", 0, img, lab, sizeof img);
    kfac_dataset d;
    ck_assert_int_eq(kfac_idx_load(NULL, lab, 10, &d), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_idx_load(img, NULL, 10, &d), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_idx_load(img, lab, 10, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_idx_load(img, lab, -1, &d), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_idx_load(img, lab, 257, &d), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_mnist_load(NULL, "train", &d), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_mnist_load(test_tmpdir(), "valid", &d), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "valid"));
    ck_assert_int_eq(kfac_mnist_load(test_tmpdir(), NULL, &d), KFAC_ERR_INVALID_ARG);
    /* a success clears the detail of the previous failure */
    ck_assert_int_eq(kfac_idx_load(img, lab, 10, &d), KFAC_OK);
    ck_assert_str_eq(kfac_last_error(), "");
    kfac_dataset_free(&d);
}
END_TEST

START_TEST(test_free)
{
    char img[512], lab[512];
    write_good("free", 0, img, lab, sizeof img);
    kfac_dataset d;
    ck_assert_int_eq(kfac_idx_load(img, lab, 10, &d), KFAC_OK);
    kfac_dataset_free(&d);
    ck_assert_ptr_null(d.x);
    ck_assert_ptr_null(d.labels);
    ck_assert_int_eq(d.n, 0);
    ck_assert_int_eq(d.features, 0);
    kfac_dataset_free(&d); /* twice is harmless once zeroed */
    kfac_dataset_free(NULL);
}
END_TEST

Suite *idx_suite(void)
{
    Suite *s = suite_create("idx");

    TCase *good = tcase_create("good");
    tcase_add_test(good, test_plain_gz_identical);
    tcase_add_test(good, test_scaling);
    tcase_add_loop_test(good, test_mnist_dir, 0, 2);
    tcase_add_test(good, test_mnist_prefers_plain);
    tcase_add_test(good, test_free);
    tcase_add_loop_test(good, test_element_types, 0, 6);
    tcase_add_test(good, test_two_dims_and_classes);
    suite_add_tcase(s, good);

    TCase *bad = tcase_create("bad");
    tcase_add_loop_test(bad, test_empty, 0, 2);
    tcase_add_loop_test(bad, test_truncated_header, 0, 3);
    tcase_add_loop_test(bad, test_truncated_data, 0, 2);
    tcase_add_test(bad, test_bad_magic);
    tcase_add_test(bad, test_bad_type);
    tcase_add_test(bad, test_bad_ndims);
    tcase_add_test(bad, test_zero_dim);
    tcase_add_loop_test(bad, test_too_large, 0, 4);
    tcase_add_test(bad, test_absurd_count);
    tcase_add_test(bad, test_count_mismatch);
    tcase_add_test(bad, test_label_range);
    tcase_add_loop_test(bad, test_corrupt_gzip, 0, 4);
    tcase_add_loop_test(bad, test_trailing_bytes, 0, 2);
    tcase_add_test(bad, test_gzip_trailing_garbage);
    tcase_add_test(bad, test_shapes_differ);
    tcase_add_test(bad, test_missing_file);
    tcase_add_test(bad, test_invalid_args);
    suite_add_tcase(s, bad);

    /* the real files take a fraction of a second, far longer under valgrind */
    TCase *real = tcase_create("real");
    tcase_set_timeout(real, 120);
    tcase_add_loop_test(real, test_real_data, 0, 2);
    suite_add_tcase(s, real);
    return s;
}
