/* tests.h - the Check suites, one per module, and helpers they share. */
#ifndef KFAC_TESTS_H
#define KFAC_TESTS_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>

#include "kfac.h"

Suite *rng_suite(void);
Suite *net_suite(void);
Suite *idx_suite(void);
Suite *csv_suite(void);
Suite *netfile_suite(void);
Suite *optim_suite(void);
Suite *train_suite(void);
Suite *cli_suite(void);
Suite *linalg_suite(void);
Suite *fisher_suite(void);
Suite *kfac_suite(void);
Suite *api_suite(void);
Suite *checkpoint_suite(void);
Suite *badinput_cli_suite(void);
Suite *dist_suite(void);
Suite *docs_suite(void);
Suite *signals_suite(void);
Suite *handles_suite(void);
Suite *conv_suite(void);
Suite *cnn_suite(void);
Suite *tridiag_suite(void);

/* Directory of the real data set ($KFAC_DATA, else the Debian default). */
const char *test_data_dir(void);
/* Project root ($KFAC_ROOT, else ".."), for nets/. */
const char *test_root(void);
/* The kfac program under test ($KFAC_BIN, else build/kfac under the root):
 * the sanitizer build tests its own. */
const char *test_kfac_bin(void);
/* A fresh empty directory for files a test makes; removed at exit. */
const char *test_tmpdir(void);

/* test_util.c. A file's text (at most 64 KiB), in a buffer the next call
 * reuses. */
char *test_slurp(const char *path);
/* v's low `bytes` bytes, most significant first (IDX headers). */
void test_write_be(FILE *f, uint64_t v, int bytes);
/* A learnable MNIST-format data set in DIR (made if missing): n training
 * and n/4 test 28x28 images, each class one bright row over noise. */
void test_write_mnist(const char *dir, int n, uint64_t seed);
/* v <- n draws uniform in [lo, hi). */
void test_fill_uniform(float *v, size_t n, float lo, float hi, kfac_rng *r);
/* The relative error |fd - grad| / |grad| of the network's gradient on
 * (x, y) against differences over every parameter (central, or one-sided
 * where a kink spoils the central one); asserts the gradient is not
 * (nearly) zero. */
double test_gradient_error(kfac_net *net, const float *x, const float *y, int batch);

#endif
