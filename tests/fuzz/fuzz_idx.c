/* fuzz_idx.c - libFuzzer harness for the IDX reader (kfac_idx_load, plain
 * or gzipped). An input is [u32 LE n][n bytes: the image file][the rest:
 * the label file]. The reader must either load a consistent data set or
 * fail with a message naming the file; never crash, never allocate what
 * the file cannot hold (libFuzzer's -malloc_limit_mb catches that).
 *
 * With KFAC_FUZZ_SEEDS=DIR in the environment it writes the seed corpus
 * there (a valid 5-image 4x3 set, each file plain or gzipped) and exits. */
#include <math.h>

#include <zlib.h>

#include "fuzz.h"

static fuzz_file images, labels;

/* gzip src into dst (capacity cap); returns the length */
static size_t gzip(const uint8_t *src, size_t n, uint8_t *dst, size_t cap)
{
    z_stream z = {0};
    FUZZ_REQUIRE(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2");
    z.next_in = (uint8_t *)src, z.avail_in = (uInt)n;
    z.next_out = dst, z.avail_out = (uInt)cap;
    FUZZ_REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END, "deflate");
    size_t out = z.total_out;
    deflateEnd(&z);
    return out;
}

static void write_seeds(const char *dir)
{
    enum { N = 5, ROWS = 4, COLS = 3 };
    uint8_t img[16 + N * ROWS * COLS] = {0, 0, 8, 3, 0, 0, 0, N, 0, 0, 0, ROWS, 0, 0, 0, COLS};
    uint8_t lbl[8 + N] = {0, 0, 8, 1, 0, 0, 0, N};
    for (int i = 0; i < N * ROWS * COLS; i++)
        img[16 + i] = (uint8_t)(i * 37);
    for (int i = 0; i < N; i++)
        lbl[8 + i] = (uint8_t)(i * 3 % 10);
    uint8_t img_gz[256], lbl_gz[256];
    size_t img_gz_n = gzip(img, sizeof img, img_gz, sizeof img_gz), lbl_gz_n = gzip(lbl, sizeof lbl, lbl_gz, sizeof lbl_gz);
    const struct { const char *name; const uint8_t *a; size_t na; const uint8_t *b; size_t nb; } seeds[] = {
        {"plain", img, sizeof img, lbl, sizeof lbl},
        {"gz-images", img_gz, img_gz_n, lbl, sizeof lbl},
        {"gz-labels", img, sizeof img, lbl_gz, lbl_gz_n},
        {"gz-both", img_gz, img_gz_n, lbl_gz, lbl_gz_n},
    };
    for (size_t s = 0; s < sizeof seeds / sizeof *seeds; s++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.idxpair", dir, seeds[s].name);
        FILE *f = fopen(path, "wb");
        FUZZ_REQUIRE(f != NULL, "cannot write %s", path);
        uint8_t len[4] = {(uint8_t)seeds[s].na, (uint8_t)(seeds[s].na >> 8), 0, 0};
        fwrite(len, 1, 4, f);
        fwrite(seeds[s].a, 1, seeds[s].na, f);
        fwrite(seeds[s].b, 1, seeds[s].nb, f);
        FUZZ_REQUIRE(fclose(f) == 0, "cannot write %s", path);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *seeds = getenv("KFAC_FUZZ_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    fuzz_file_open(&images, "images");
    fuzz_file_open(&labels, "labels");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0;
    if (size >= 4) {
        n = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
        data += 4, size -= 4;
    }
    if (n > size)
        n = size;
    fuzz_file_put(&images, data, n);
    fuzz_file_put(&labels, data + n, size - n);

    kfac_dataset d;
    memset(&d, 0x5a, sizeof d); /* untouched on failure, per the header */
    kfac_dataset before = d;
    kfac_status st = kfac_idx_load(images.path, labels.path, 10, &d);
    if (st != KFAC_OK) {
        const char *msg = kfac_last_error();
        FUZZ_REQUIRE(msg && (strstr(msg, images.path) || strstr(msg, labels.path)), "message \"%s\" names no file",
                     msg ? msg : "(null)");
        FUZZ_REQUIRE(memcmp(&d, &before, sizeof d) == 0, "a failed load changed *out");
        return 0;
    }
    FUZZ_REQUIRE(d.n >= 1 && d.rows >= 1 && d.cols >= 1 && d.features == d.rows * d.cols && d.classes == 10,
                 "n %d rows %d cols %d features %d classes %d", d.n, d.rows, d.cols, d.features, d.classes);
    /* unsigned bytes (a plain file's third byte 0x08) scale to [0, 1];
     * the other types hold any finite value */
    int ubyte = n >= 3 && data[0] == 0 && data[1] == 0 && data[2] == 0x08;
    for (size_t i = 0; i < (size_t)d.n * (size_t)d.features; i++)
        FUZZ_REQUIRE(isfinite(d.x[i]) && (!ubyte || (d.x[i] >= 0.0f && d.x[i] <= 1.0f)), "pixel %zu is %g", i,
                     d.x[i]);
    for (int i = 0; i < d.n; i++)
        FUZZ_REQUIRE(d.labels[i] < 10, "label %d is %d", i, d.labels[i]);
    kfac_dataset_free(&d);
    return 0;
}
