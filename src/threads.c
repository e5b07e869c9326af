/* threads.c - the runtime: one thread count for our OpenMP loops and
 * OpenBLAS (its OpenMP build shares libgomp's pool), flush-to-zero while
 * training, aligned float buffers and the clock. */
/* madvise(MADV_HUGEPAGE) is outside POSIX */
#define _DEFAULT_SOURCE
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "common.h"

/* Address space a new OpenBLAS thread takes: OpenBLAS gives each thread
 * a buffer of 128 MiB (x86-64's BUFFER_SIZE; malloc maps 129 MiB for it)
 * as the count is set, and libgomp a stack. */
#define BLAS_BUFFER_BYTES ((size_t)129 << 20)

/* Bytes of address space the process may still map: the least of what
 * RLIMIT_AS and RLIMIT_DATA leave and, under strict overcommit (mode 2),
 * what the kernel will still commit; SIZE_MAX without a limit. */
static size_t address_room(void)
{
    size_t room = SIZE_MAX, page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned long pages[6] = {0}; /* statm: size resident shared text lib data */
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%lu %lu %lu %lu %lu %lu", &pages[0], &pages[1], &pages[2], &pages[3], &pages[4], &pages[5]) !=
            6)
            memset(pages, 0, sizeof pages);
        fclose(f);
    }
    static const int which[2] = {RLIMIT_AS, RLIMIT_DATA};
    const size_t used[2] = {pages[0] * page, pages[5] * page};
    for (int i = 0; i < 2; i++) {
        struct rlimit rl;
        if (getrlimit(which[i], &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
            room = KFAC_MIN(room, rl.rlim_cur > used[i] ? (size_t)rl.rlim_cur - used[i] : 0);
    }
    int mode = 0;
    if ((f = fopen("/proc/sys/vm/overcommit_memory", "r"))) {
        if (fscanf(f, "%d", &mode) != 1)
            mode = 0;
        fclose(f);
    }
    if (mode == 2 && (f = fopen("/proc/meminfo", "r"))) {
        char line[128];
        unsigned long long limit = 0, committed = 0, kb;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "CommitLimit: %llu kB", &kb) == 1)
                limit = kb;
            else if (sscanf(line, "Committed_AS: %llu kB", &kb) == 1)
                committed = kb;
        }
        fclose(f);
        if (limit > 0)
            room = KFAC_MIN(room, limit > committed ? (size_t)(limit - committed) * 1024 : 0);
    }
    return room;
}

/* OpenBLAS maps a working buffer the first time a call needs one (the
 * caller's, one at a time; its threads' come with kfac_set_threads) and
 * keeps it for later calls, retrying forever one it cannot map: a run
 * whose data left less than that under `ulimit -v` hung in its first
 * product. So before the first real work there must be room for one and
 * 16 MiB besides (checked once a process: once mapped it stays). */
#define BLAS_RESERVE (BLAS_BUFFER_BYTES + ((size_t)16 << 20))

/* Buffers OpenBLAS holds mapped but unused: a lower thread count frees
 * the buffers of the threads it drops, and the next call needing one
 * takes such a slot before it maps another. */
static int blas_spare;

kfac_status kfac_blas_room(void)
{
    static int checked; /* a race only checks twice */
    if (checked || blas_spare > 0)
        return KFAC_OK;
    size_t room = address_room();
    if (room < BLAS_RESERVE)
        return kfac_fail(KFAC_ERR_NOMEM,
                         "the memory limits leave %zu MiB of address space; OpenBLAS needs %zu MiB for its "
                         "buffers (and would wait forever for one it cannot map)",
                         room >> 20, BLAS_RESERVE >> 20);
    checked = 1;
    return KFAC_OK;
}

/* Why the last kfac_set_threads runs fewer threads than asked. */
static char threads_note[200];

const char *kfac_threads_note(void) { return threads_note; }

void kfac_set_threads(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    threads_note[0] = '\0';
    /* OpenBLAS retries a buffer it cannot allocate forever
     * (blas_memory_alloc): under `ulimit -v 4000000`, 32 threads spun at
     * 100% CPU for good inside openblas_set_num_threads. So the new
     * threads' buffers and stacks may take at most half the address space
     * the limits leave (the rest is the run's). */
    int have = KFAC_MAX(openblas_get_num_threads(), 1);
    if (n > have) {
        struct rlimit rl;
        size_t stack = getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur
                                                                                        : (size_t)32 << 20;
        size_t per = BLAS_BUFFER_BYTES + stack, room = address_room() / 2;
        if ((size_t)(n - have) > room / per) {
            int fit = have + (int)(room / per);
            snprintf(threads_note, sizeof threads_note,
                     "the memory limits leave room for %d thread%s (each OpenBLAS thread maps %zu MiB)", fit,
                     KFAC_S(fit), per >> 20);
            n = fit;
        }
    }
    /* OpenBLAS runs at most the threads it was built for (64 in Debian's);
     * our loops take as many, so kfac_get_threads tells the truth */
    openblas_set_num_threads(n);
    int blas = openblas_get_num_threads();
    blas_spare = KFAC_MAX(blas_spare + have - blas, 0);
    if (blas > 0 && blas < n)
        snprintf(threads_note, sizeof threads_note, "OpenBLAS runs at most %d thread%s", blas, KFAC_S(blas));
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
