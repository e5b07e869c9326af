/* dist.c - the process group of data-parallel training (dist.h): MPI when
 * built with -DKFAC_MPI (make MPI=1), else the single process alone. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "dist.h"

#ifdef KFAC_MPI
#include <mpi.h>

struct kfac_dist {
    MPI_Comm comm; /* MPI_COMM_NULL: a group of one */
    int rank, size;
};

kfac_status kfac_dist_new_alone(kfac_dist **out)
{
    kfac_dist *d = calloc(1, sizeof *d);
    if (!d)
        return kfac_fail(KFAC_ERR_NOMEM, "process group: out of memory");
    d->comm = MPI_COMM_NULL;
    d->size = 1;
    *out = d;
    return KFAC_OK;
}

void kfac_dist_take(kfac_dist *into, kfac_dist *from)
{
    into->comm = from->comm, into->rank = from->rank, into->size = from->size;
    from->comm = MPI_COMM_NULL;
    kfac_dist_free(from);
}

int kfac_mpi_available(void) { return 1; }

/* An MPI failure as a status: our communicator returns errors instead of
 * aborting the program (MPI_ERRORS_RETURN). */
static kfac_status mpi_fail(int err, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS)
        len = 0;
    msg[len] = '\0';
    return kfac_fail(KFAC_ERR_COMM, "MPI: %s failed: %s", what, len ? msg : "unknown error");
}

kfac_status kfac_dist_new(const void *comm, kfac_dist **out)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin)
        return kfac_fail(KFAC_ERR_STATE, "MPI is not initialised (MPI_Init first)");
    kfac_dist *d = calloc(1, sizeof *d);
    if (!d)
        return kfac_fail(KFAC_ERR_NOMEM, "MPI group: out of memory");
    int err = MPI_Comm_dup(*(const MPI_Comm *)comm, &d->comm);
    if (err != MPI_SUCCESS) {
        free(d);
        return mpi_fail(err, "MPI_Comm_dup");
    }
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    *out = d;
    return KFAC_OK;
}

void kfac_dist_free(kfac_dist *d)
{
    if (!d)
        return;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin && d->comm != MPI_COMM_NULL)
        MPI_Comm_free(&d->comm);
    free(d);
}

/* MPI counts are int: long buffers go in chunks */
static kfac_status allreduce(const kfac_dist *d, void *buf, size_t n, size_t elem, MPI_Datatype type, MPI_Op op)
{
    for (size_t done = 0; kfac_dist_grouped(d) && done < n;) {
        int count = (int)KFAC_MIN(n - done, (size_t)INT_MAX);
        int err = MPI_Allreduce(MPI_IN_PLACE, (char *)buf + done * elem, count, type, op, d->comm);
        if (err != MPI_SUCCESS)
            return mpi_fail(err, "MPI_Allreduce");
        done += (size_t)count;
    }
    return KFAC_OK;
}

kfac_status kfac_dist_sum_floats(const kfac_dist *d, float *buf, size_t n)
{
    return allreduce(d, buf, n, sizeof *buf, MPI_FLOAT, MPI_SUM);
}

kfac_status kfac_dist_sum_doubles(const kfac_dist *d, double *buf, size_t n)
{
    return allreduce(d, buf, n, sizeof *buf, MPI_DOUBLE, MPI_SUM);
}

kfac_status kfac_dist_max_ints(const kfac_dist *d, int *buf, size_t n)
{
    return allreduce(d, buf, n, sizeof *buf, MPI_INT, MPI_MAX);
}

kfac_status kfac_dist_bcast(const kfac_dist *d, void *buf, size_t bytes, int root)
{
    for (size_t done = 0; kfac_dist_grouped(d) && done < bytes;) {
        int count = (int)KFAC_MIN(bytes - done, (size_t)INT_MAX);
        int err = MPI_Bcast((char *)buf + done, count, MPI_BYTE, root, d->comm);
        if (err != MPI_SUCCESS)
            return mpi_fail(err, "MPI_Bcast");
        done += (size_t)count;
    }
    return KFAC_OK;
}

int kfac_dist_rank(const kfac_dist *d) { return d ? d->rank : 0; }
int kfac_dist_size(const kfac_dist *d) { return d ? d->size : 1; }

#else /* the single process: only groups of one */

struct kfac_dist {
    int unused;
};

int kfac_mpi_available(void) { return 0; }

kfac_status kfac_dist_new_alone(kfac_dist **out)
{
    kfac_dist *d = calloc(1, sizeof *d);
    if (!d)
        return kfac_fail(KFAC_ERR_NOMEM, "process group: out of memory");
    *out = d;
    return KFAC_OK;
}

void kfac_dist_take(kfac_dist *into, kfac_dist *from) { (void)into, kfac_dist_free(from); }

kfac_status kfac_dist_new(const void *comm, kfac_dist **out)
{
    (void)comm, (void)out;
    return kfac_fail(KFAC_ERR_STATE, "libkfac was built without MPI (build it with `make MPI=1`)");
}

void kfac_dist_free(kfac_dist *d) { free(d); }
int kfac_dist_rank(const kfac_dist *d) { return (void)d, 0; }
int kfac_dist_size(const kfac_dist *d) { return (void)d, 1; }
kfac_status kfac_dist_sum_floats(const kfac_dist *d, float *buf, size_t n) { return (void)d, (void)buf, (void)n, KFAC_OK; }
kfac_status kfac_dist_sum_doubles(const kfac_dist *d, double *buf, size_t n)
{
    return (void)d, (void)buf, (void)n, KFAC_OK;
}
kfac_status kfac_dist_max_ints(const kfac_dist *d, int *buf, size_t n) { return (void)d, (void)buf, (void)n, KFAC_OK; }
kfac_status kfac_dist_bcast(const kfac_dist *d, void *buf, size_t bytes, int root)
{
    return (void)d, (void)buf, (void)bytes, (void)root, KFAC_OK;
}

#endif

int kfac_dist_grouped(const kfac_dist *d) { return kfac_dist_size(d) > 1; }

int kfac_dist_largest_slice(const kfac_dist *d, int total)
{
    int size = kfac_dist_size(d);
    return (total + size - 1) / size;
}

kfac_status kfac_dist_mean_floats(const kfac_dist *d, float *x, size_t n, int rows, int total)
{
    if (!kfac_dist_grouped(d))
        return KFAC_OK;
    const float w = (float)rows / (float)total;
    for (size_t i = 0; i < n; i++)
        x[i] *= w;
    return kfac_dist_sum_floats(d, x, n);
}

kfac_status kfac_dist_mean_double(const kfac_dist *d, double *x, int rows, int total)
{
    if (!kfac_dist_grouped(d))
        return KFAC_OK;
    *x *= (double)rows / total;
    return kfac_dist_sum_doubles(d, x, 1);
}

kfac_status kfac_dist_sum_blocks(const kfac_dist *d, float *buf, const size_t *off, const int *mask, int n_blocks)
{
    for (int b = 0; kfac_dist_grouped(d) && b < n_blocks;) {
        int e = b;
        while (e < n_blocks && mask[e])
            e++;
        if (e > b) {
            kfac_status st = kfac_dist_sum_floats(d, buf + off[b], off[e] - off[b]);
            if (st != KFAC_OK)
                return st;
        }
        b = e + 1;
    }
    return KFAC_OK;
}

void kfac_dist_assign(const double *cost, int n, int ranks, int *owner)
{
    enum { MAX_JOBS = 2 * KFAC_MAX_LAYERS, MAX_RANKS = 4096 };
    if (ranks < 1)
        ranks = 1;
    /* more ranks than jobs: the spare ones get nothing */
    int r_used = KFAC_MIN(ranks, MAX_RANKS);
    double load[MAX_RANKS];
    int order[MAX_JOBS];
    n = KFAC_MIN(n, MAX_JOBS);
    for (int r = 0; r < r_used; r++)
        load[r] = 0.0;
    for (int j = 0; j < n; j++)
        order[j] = j;
    /* insertion sort, largest cost first, index order on ties (stable) */
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && cost[order[k]] > cost[order[k - 1]]; k--) {
            int tmp = order[k];
            order[k] = order[k - 1];
            order[k - 1] = tmp;
        }
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int r = 1; r < r_used; r++)
            if (load[r] < load[best])
                best = r;
        owner[order[i]] = best;
        load[best] += cost[order[i]];
    }
}
