/* threads.c - the runtime: one thread count for our OpenMP loops and
 * OpenBLAS (its OpenMP build shares libgomp's pool), aligned float buffers
 * and the clock. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

void kfac_set_threads(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int kfac_get_threads(void) { return omp_get_max_threads(); }

float *kfac_alloc_floats(size_t n)
{
    if (n == 0)
        n = 1;
    if (n > (SIZE_MAX - 63) / sizeof(float))
        return NULL;
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63; /* aligned_alloc wants a multiple */
    return aligned_alloc(64, bytes);
}

void kfac_free_floats(float *p) { free(p); }

double kfac_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
