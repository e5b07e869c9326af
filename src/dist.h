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
/* A group of one (rank 0, size 1; every collective a no-op), in either
 * build: what a trainer holds from its creation and hands to its
 * optimizer once, so that joining a communicator later (kfac_dist_take)
 * reaches every holder without being handed down again. */
kfac_status kfac_dist_new_alone(kfac_dist **out);
/* `into` (a group of one) takes `from`'s communicator; `from` is freed. */
void kfac_dist_take(kfac_dist *into, kfac_dist *from);
void kfac_dist_free(kfac_dist *d);

int kfac_dist_rank(const kfac_dist *d); /* 0 for NULL */
int kfac_dist_size(const kfac_dist *d); /* 1 for NULL */
/* More than one process: the data-parallel paths are taken (NULL: 0). */
int kfac_dist_grouped(const kfac_dist *d);
/* The most rows any process holds of a batch of `total` split over the
 * group: what every rank uses for a choice all must make alike. */
int kfac_dist_largest_slice(const kfac_dist *d, int total);

/* In-place sums over the group (MPI_Allreduce). */
kfac_status kfac_dist_sum_floats(const kfac_dist *d, float *buf, size_t n);
kfac_status kfac_dist_sum_doubles(const kfac_dist *d, double *buf, size_t n);
/* In-place maximum of ints over the group: how ranks agree on a status. */
kfac_status kfac_dist_max_ints(const kfac_dist *d, int *buf, size_t n);
/* Root's bytes to every rank (MPI_Bcast). */
kfac_status kfac_dist_bcast(const kfac_dist *d, void *buf, size_t bytes, int root);

/* The group's mean of per-process means, each over `rows` of `total`
 * rows: weighted by rows / total, then summed. Alone: unchanged. */
kfac_status kfac_dist_mean_floats(const kfac_dist *d, float *x, size_t n, int rows, int total);
kfac_status kfac_dist_mean_double(const kfac_dist *d, double *x, int rows, int total);
/* Sum the blocks [off[b], off[b+1]) of buf with mask[b] set, b < n_blocks,
 * one collective per run of consecutive blocks. */
kfac_status kfac_dist_sum_blocks(const kfac_dist *d, float *buf, const size_t *off, const int *mask, int n_blocks);

/* Longest-processing-time assignment of n jobs to `ranks` owners: jobs by
 * cost, largest first, each to the least-loaded owner (the lowest rank on
 * ties), so every rank computes the same owner[] without talking. Within
 * 4/3 of the best makespan (Graham 1969). Pure; no MPI. */
void kfac_dist_assign(const double *cost, int n, int ranks, int *owner);

#endif
