/* dist.h - the library's only contact with MPI: a process group (a
 * duplicated communicator) and the few collectives data-parallel training
 * needs. A NULL kfac_dist is the single-process case, where every
 * collective is a no-op; built without MPI (no -DKFAC_MPI) only that case
 * exists, so callers need no #ifdefs. */
#ifndef KFAC_DIST_H
#define KFAC_DIST_H

#include "kfac.h"

typedef struct kfac_dist kfac_dist;

/* A group over the MPI_Comm that `comm` points to (duplicated, so our
 * collectives never meet the caller's messages). Collective. Without MPI,
 * or before MPI_Init, KFAC_ERR_STATE. */
kfac_status kfac_dist_new(const void *comm, kfac_dist **out);
void kfac_dist_free(kfac_dist *d);

int kfac_dist_rank(const kfac_dist *d); /* 0 for NULL */
int kfac_dist_size(const kfac_dist *d); /* 1 for NULL */

/* In-place sums over the group (MPI_Allreduce). */
kfac_status kfac_dist_sum_floats(const kfac_dist *d, float *buf, size_t n);
kfac_status kfac_dist_sum_doubles(const kfac_dist *d, double *buf, size_t n);
/* In-place maximum of ints over the group: how ranks agree on a status. */
kfac_status kfac_dist_max_ints(const kfac_dist *d, int *buf, size_t n);
/* Root's bytes to every rank (MPI_Bcast). */
kfac_status kfac_dist_bcast(const kfac_dist *d, void *buf, size_t bytes, int root);

/* Longest-processing-time assignment of n jobs to `ranks` owners: jobs by
 * cost, largest first, each to the least-loaded owner (the lowest rank on
 * ties), so every rank computes the same owner[] without talking. Within
 * 4/3 of the best makespan (Graham 1969). Pure; no MPI. */
void kfac_dist_assign(const double *cost, int n, int ranks, int *owner);

#endif
