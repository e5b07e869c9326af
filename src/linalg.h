/* linalg.h - the LAPACK layer of K-FAC: damped inverses of symmetric
 * positive semi-definite Kronecker factors with a fallback chain that never
 * hands back NaN, and symmetric eigendecompositions. Matrices are n x n
 * float, row-major (symmetric, so row- and column-major agree). */
#ifndef KFAC_LINALG_H
#define KFAC_LINALG_H

#include "kfac.h"

/* What an inversion or eigendecomposition needed beyond the plain float
 * path: the KFAC_FALLBACK_* bits of kfac.h (docs/algorithm.md §4). */

/* Workspace for matrices up to max_n: allocated once, reused by every call
 * (so periodic inversions allocate nothing). One per thread. */
typedef struct kfac_linalg_ws kfac_linalg_ws;
kfac_status kfac_linalg_ws_new(int max_n, kfac_linalg_ws **out);
void kfac_linalg_ws_free(kfac_linalg_ws *ws);

/* out = (S + damping I)^-1 for symmetric PSD S (n x n), damping >= 0.
 * Chain: float Cholesky (spotrf + spotri); if that fails or yields a
 * non-finite value, the same in double; then damping x10 (at most 4 times);
 * then eigendecomposition in double with eigenvalues clipped at 0. *flags
 * gets the KFAC_FALLBACK_* bits used, *used_damping the damping finally
 * applied (either may be NULL). Returns KFAC_ERR_NUMERIC (out untouched)
 * only if S itself has a non-finite entry or every step fails. */
kfac_status kfac_damped_inverse(const float *S, int n, double damping, float *out, kfac_linalg_ws *ws,
                                int *flags, double *used_damping);

/* S = Q diag(e) Q^T: e ascending and clipped below at 0 (the factors are
 * PSD; negative eigenvalues are rounding), Q row-major with eigenvector k in
 * column k. Float ssyevd, then dsyevd if that fails (KFAC_FALLBACK_DOUBLE
 * in *flags). KFAC_ERR_NUMERIC if S has a non-finite entry. */
kfac_status kfac_sym_eigen(const float *S, int n, float *Q, float *e, kfac_linalg_ws *ws, int *flags);

/* The top of S's spectrum by randomized subspace iteration (Halko,
 * Martinsson & Tropp 2011, Alg. 4.4 and 5.3), on sgemm: `iters` times
 * Y = S U, U = orth(Y) (Householder QR), then Rayleigh-Ritz on span(U).
 * U (in and out) is s x n row-major, row i a vector: in, the starting block
 * (random, or the previous basis for a warm start: S changes slowly between
 * inversions, so one iteration then suffices); out, the Ritz vectors by
 * Ritz value descending, into e (s values, clipped below at 0). Needs
 * 1 <= s <= n / 2 (a larger s costs more than a full eigendecomposition)
 * and iters >= 1. *flags as kfac_sym_eigen's. */
kfac_status kfac_sym_topk(const float *S, int n, int s, int iters, float *U, float *e, kfac_linalg_ws *ws,
                          int *flags);

/* The block-tridiagonal inverse's pieces (docs/algorithm.md §4.7), in
 * double. kfac_cross_solve: for S (n x n, PSD) damped by `damping` and the
 * cross moment X (m x n), psi = X (S + damping I)^-1 (m x n, float) and
 * D = X (S + damping I)^-1 X^T (m x m, double, symmetric); work holds m n
 * doubles. kfac_gen_eigen: K (n x n float) with K^T (S + damping I) K = I
 * and K^T D K = diag(s) (D NULL: zero), and c = 1 - s (n floats) with s
 * clipped into [0, 1]. KFAC_ERR_NUMERIC for a non-finite S or X, or a
 * factorisation that fails; n and m at most the workspace's size. */
kfac_status kfac_cross_solve(const float *S, int n, double damping, const float *X, int m, float *psi, double *D,
                             double *work, kfac_linalg_ws *ws);
kfac_status kfac_gen_eigen(const float *S, int n, double damping, const double *D, float *K, float *c,
                           kfac_linalg_ws *ws);

/* b <- A^-1 b for symmetric positive definite A (n x n, double), by
 * Cholesky in place (a is overwritten by the factor). KFAC_ERR_NUMERIC if
 * A is not positive definite, the message naming `what`. For the exact
 * checks (check.c). */
kfac_status kfac_spd_solve_double(double *a, int n, double *b, const char *what);

#endif
