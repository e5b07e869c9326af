/* test_util.c - helpers the suites share (tests.h): whole files read back,
 * big-endian fields, and a small learnable MNIST-format data set. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kfac.h"
#include "tests.h"

char *test_slurp(const char *path)
{
    static char buf[1 << 16];
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

void test_write_be(FILE *f, uint64_t v, int bytes)
{
    for (int k = bytes - 1; k >= 0; k--)
        fputc((int)(v >> (8 * k)) & 0xFF, f);
}

void test_write_mnist(const char *dir, int n, uint64_t seed)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    const char *sets[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        int count = s == 0 ? n : n / 4;
        char path[700];
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, sets[s]);
        FILE *fi = fopen(path, "wb");
        snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, sets[s]);
        FILE *fl = fopen(path, "wb");
        ck_assert(fi && fl);
        test_write_be(fi, 0x803, 4), test_write_be(fi, (uint32_t)count, 4);
        test_write_be(fi, 28, 4), test_write_be(fi, 28, 4);
        test_write_be(fl, 0x801, 4), test_write_be(fl, (uint32_t)count, 4);
        for (int i = 0; i < count; i++) {
            unsigned char label = (unsigned char)kfac_rng_below(&r, 10), img[784];
            for (int k = 0; k < 784; k++)
                img[k] = (unsigned char)kfac_rng_below(&r, 60);
            memset(img + 28 * (2 + 2 * label), 255, 28);
            fwrite(img, 1, sizeof img, fi);
            fputc(label, fl);
        }
        fclose(fi);
        fclose(fl);
    }
}
