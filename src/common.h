/* common.h - private helpers shared by every library source file: error
 * reporting and small utilities. Not installed. */
#ifndef KFAC_COMMON_H
#define KFAC_COMMON_H

#include "kfac.h"
#include "plural.h"

#if defined(__GNUC__)
#define KFAC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KFAC_PRINTF(a, b)
#endif

/* Record the detail of a failure for kfac_last_error() and return `s`, so
 * call sites read `return kfac_fail(KFAC_ERR_IO, "%s: cannot open", path);` */
kfac_status kfac_fail(kfac_status s, const char *fmt, ...) KFAC_PRINTF(2, 3);

/* Clear the detail (called on entry by functions that may fail). */
void kfac_clear_error(void);

/* 64-byte aligned float buffers (cache lines, AVX-512 loads); NULL on
 * failure or overflow. Free with kfac_free_floats. */
float *kfac_alloc_floats(size_t n);
void kfac_free_floats(float *p);

/* Monotonic wall-clock seconds, for the training time and K-FAC's
 * breakdown. */
double kfac_seconds(void);

/* Flush denormal results and inputs to zero (SSE's FTZ and DAZ, x86-64
 * only) on the calling thread and its OpenMP pool until the matching
 * kfac_fp_flush_end, which restores each thread's modes. Nests. */
void kfac_fp_flush_begin(void);
void kfac_fp_flush_end(void);

/* OpenMP's runtime calls. A build without -fopenmp (the fuzzing build,
 * tests/fuzz/) ignores the pragmas and runs everything on one thread. */
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_procs(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
#endif

/* The data set a network of `spec` reads: d itself, or, when spec pools
 * its input (input_pool > 1) and d holds the full-size images, d pooled
 * into *pooled (zeroed otherwise; the caller frees it with
 * kfac_dataset_free). The trainer, kfac_evaluate and kfac_check call it,
 * so a net file's `pool` works through the API. */
kfac_status kfac_dataset_for_net(const kfac_net_spec *spec, const kfac_dataset *d, kfac_dataset *pooled,
                                 const kfac_dataset **use);

#define KFAC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KFAC_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
