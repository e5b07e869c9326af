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

/* The library's one allocator of float buffers: 64-byte aligned (cache
 * lines, AVX-512 loads), on transparent huge pages from 8 MB; NULL on
 * failure or overflow. Free with kfac_free_floats (which is free()). */
float *kfac_alloc_floats(size_t n);
void kfac_free_floats(float *p);

/* <a, b> over n floats, accumulated in double: one vectorized pass on
 * the library's threads (OpenBLAS's sdsdot and dsdot take one thread and
 * run at a quarter of the memory bandwidth). Deterministic for a given
 * thread count. */
double kfac_dot_floats(const float *a, const float *b, size_t n);

/* Enum names (names.c): the index of `name` among the `count` names that
 * name_of gives (NULL: a row not filled in), or a failure "unknown <what>
 * '<name>' (a, b, ...)" listing them. */
kfac_status kfac_enum_lookup(const char *(*name_of)(int k), int count, const char *what, const char *name,
                             int *out);

/* Defines the public `const char *prefix_name(type)` and
 * `kfac_status prefix_from_name(const char *, type *)` of an enum from an
 * expression naming row k of its table: the one way every enum is named. */
#define KFAC_NAMED_ENUM(type, prefix, name_of_k, count, what)                                                     \
    static const char *prefix##_row_name(int k) { return (name_of_k); }                                          \
    const char *prefix##_name(type k) { return (unsigned)k < (unsigned)(count) ? prefix##_row_name((int)k) : NULL; } \
    kfac_status prefix##_from_name(const char *name, type *out)                                                   \
    {                                                                                                             \
        if (!out)                                                                                                 \
            return kfac_fail(KFAC_ERR_INVALID_ARG, #prefix "_from_name: out is NULL");                            \
        int v = 0;                                                                                                \
        kfac_status st = kfac_enum_lookup(prefix##_row_name, (count), (what), name, &v);                          \
        if (st == KFAC_OK)                                                                                        \
            *out = (type)v;                                                                                       \
        return st;                                                                                                \
    }

/* Set a [net] key of a spec from text as the net file does (netfile.c;
 * kfac_net_spec_set): INVALID_ARG naming the key and the value. */
kfac_status kfac_netfile_set_net_key(kfac_net_spec *spec, const char *key, const char *value);

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

/* Parallel-work thresholds, in elements: an OpenMP loop splits over the
 * threads only past these, since waking the pool costs a few microseconds.
 * Measured on the 2-core target: two threads start winning on memory-bound
 * passes over 2-5 float vectors (optimizer updates, ReLU) between 32k and
 * 64k elements; near 8k with Adam's square root and division per element;
 * near 4k with an exp, log or tanh per element (losses, tanh, sigmoid).
 * Plain copies and scalings of matrices wait for 64k. Changing one changes
 * which loops run in parallel, and so the rounding of their reductions. */
#define KFAC_PAR_STREAM 32768
#define KFAC_PAR_ADAM 8192
#define KFAC_PAR_TRANSCENDENTAL 4096
#define KFAC_PAR_COPY 65536

/* The data set a network of `spec` reads: d itself, or, when spec pools
 * its input (input_pool > 1) and d holds the full-size images, d pooled
 * into *pooled (zeroed otherwise; the caller frees it with
 * kfac_dataset_free). The trainer, kfac_evaluate and kfac_check call it,
 * so a net file's `pool` works through the API. */
kfac_status kfac_dataset_for_net(const kfac_net_spec *spec, const kfac_dataset *d, kfac_dataset *pooled,
                                 const kfac_dataset **use);
/* What the library reads of a caller's dataset, checked before it reads
 * it (a kfac_dataset is a public struct: anything may be in it): at least
 * one example, x set, rows and cols at least 1 with rows x cols ==
 * features; with classes > 0, labels set and every one in [0, classes).
 * `who` starts the message ("kfac_trainer_new"). */
kfac_status kfac_dataset_check(const kfac_dataset *d, int classes, const char *who);

/* Room in the address space for OpenBLAS's working buffers, which it
 * waits forever for when it cannot map them (threads.c): KFAC_ERR_NOMEM
 * under memory limits that leave too little. Checked once a process, by
 * the entries before their first product (trainer, evaluation,
 * preconditioner). */
kfac_status kfac_blas_room(void);

#define KFAC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KFAC_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
