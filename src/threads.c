/* threads.c - the runtime: one thread count for our OpenMP loops and
 * OpenBLAS (its OpenMP build shares libgomp's pool), flush-to-zero while
 * training, aligned float buffers and the clock. */
/* madvise(MADV_HUGEPAGE) is outside POSIX */
#define _DEFAULT_SOURCE
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "common.h"

void kfac_set_threads(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    /* OpenBLAS runs at most the threads it was built for (64 in Debian's);
     * our loops take as many, so kfac_get_threads tells the truth */
    openblas_set_num_threads(n);
    int blas = openblas_get_num_threads();
    omp_set_num_threads(blas > 0 && blas < n ? blas : n);
}

int kfac_get_threads(void) { return omp_get_max_threads(); }

#if defined(__x86_64__)
/* MXCSR's flush-to-zero (FTZ, results) and denormals-are-zero (DAZ,
 * inputs) bits; every x86-64 processor has both. */
#define FLUSH_BITS 0x8040u
#define FLAG_BITS 0x003fu /* the sticky exception flags */
static unsigned csr_get(void) { return _mm_getcsr(); }
static void csr_set(unsigned v) { _mm_setcsr(v); }
#else
/* elsewhere the environment is left alone (slower where denormals are) */
#define FLUSH_BITS 0u
#define FLAG_BITS 0u
static unsigned csr_get(void) { return 0; }
static void csr_set(unsigned v) { (void)v; }
#endif

static _Thread_local int flush_depth;      /* the calling thread's nesting */
static _Thread_local unsigned flush_saved; /* each thread's MXCSR before */
static _Thread_local int flush_held;       /* flush_saved is this thread's */

/* The threads a call may use: our regions' and OpenBLAS's (at most the
 * larger, from the one libgomp pool of the calling thread). */
#define POOL_THREADS KFAC_MAX(omp_get_max_threads(), openblas_get_num_threads())

/* MXCSR is per thread, so it is set in a region of as many threads as
 * training uses. This relies on libgomp keeping the calling thread's pool:
 * later regions of that many threads (or of one, which leaves the pool be)
 * run on these same threads. A thread the pool adds meanwhile inherits the
 * caller's flushed MXCSR, and kfac_fp_flush_end gives it the caller's old
 * one. */
void kfac_fp_flush_begin(void)
{
    if (FLUSH_BITS == 0 || flush_depth++ > 0)
        return;
#pragma omp parallel num_threads(POOL_THREADS)
    {
        flush_saved = csr_get();
        flush_held = 1;
        csr_set(flush_saved | FLUSH_BITS);
    }
}

/* The modes (rounding, masks, FTZ, DAZ) as they were; exception flags
 * raised meanwhile stay raised, as after any arithmetic (feupdateenv's
 * rule). */
void kfac_fp_flush_end(void)
{
    if (FLUSH_BITS == 0 || flush_depth == 0 || --flush_depth > 0)
        return;
    unsigned caller = flush_saved;
#pragma omp parallel num_threads(POOL_THREADS)
    {
        unsigned before = flush_held ? flush_saved : caller;
        csr_set((before & ~FLAG_BITS) | ((before | csr_get()) & FLAG_BITS));
        flush_held = 0;
    }
}

double kfac_dot_floats(const float *a, const float *b, size_t n)
{
    double acc = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : acc) if (n > KFAC_PAR_STREAM)
    for (size_t i = 0; i < n; i++)
        acc += (double)a[i] * b[i];
    return acc;
}

float *kfac_alloc_floats(size_t n)
{
    const size_t line = 64, huge = (size_t)2 << 20;
    if (n == 0)
        n = 1;
    if (n > (SIZE_MAX - huge) / sizeof(float))
        return NULL;
    size_t bytes = n * sizeof(float);
#ifdef MADV_HUGEPAGE
    /* big buffers (a data set: 188 MB) on transparent huge pages: first
     * touching them 4 KiB at a time costs more than filling them */
    if (bytes >= 4 * huge) {
        size_t rounded = (bytes + huge - 1) / huge * huge;
        float *x = aligned_alloc(huge, rounded);
        if (x)
            madvise(x, rounded, MADV_HUGEPAGE); /* advice only; may fail */
        return x;
    }
#endif
    /* aligned_alloc wants a multiple of the alignment */
    return aligned_alloc(line, (bytes + line - 1) / line * line);
}

void kfac_free_floats(float *p) { free(p); }

double kfac_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
