/* lapack.h - the Fortran LAPACK routines libkfac calls, declared by hand
 * (OpenBLAS exports them; there is no LAPACKE on purpose). gfortran ABI:
 * every argument by pointer, and each CHARACTER argument adds a hidden
 * size_t length at the end of the list. Matrices are column-major; for a
 * symmetric matrix that is the same memory as row-major. Included by
 * linalg.c alone: the only file that calls LAPACK. */
#ifndef KFAC_LAPACK_H
#define KFAC_LAPACK_H

#include <stddef.h>

/* A (n x n, SPD) = U^T U (uplo "U") or L L^T (uplo "L"), the factor
 * overwriting that triangle of a. info > 0: the leading minor of that order
 * is not positive definite. */
void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);

/* A^-1 from the Cholesky factor in a, written to the same triangle only.
 * info > 0: a diagonal entry of the factor is exactly zero. */
void spotri_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t uplo_len);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);

/* B (n x nrhs) <- A^-1 B from the Cholesky factor of A in a. */
void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a, const int *lda, double *b,
             const int *ldb, int *info, size_t uplo_len);

/* rcond ~ 1 / (||A||_1 ||A^-1||_1) from the Cholesky factor in a and
 * anorm = ||A||_1 (Hager/Higham estimate, O(n^2)). work: 3n, iwork: n. */
void spocon_(const char *uplo, const int *n, const float *a, const int *lda, const float *anorm, float *rcond,
             float *work, int *iwork, int *info, size_t uplo_len);
void dpocon_(const char *uplo, const int *n, const double *a, const int *lda, const double *anorm, double *rcond,
             double *work, int *iwork, int *info, size_t uplo_len);

/* A (n x n, symmetric) = Z diag(w) Z^T, w ascending; jobz "V": a is
 * overwritten by Z, eigenvector k in column k (divide and conquer).
 * lwork = -1 / liwork = -1: only the optimal sizes, into work[0] and
 * iwork[0]. info > 0: the algorithm did not converge. */
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda, float *w, float *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

/* Householder QR of a (m x n, m >= n): R in the upper triangle, the
 * reflectors below it and in tau (n). sorgqr then overwrites a with the
 * first n columns of Q. lwork = -1: only the optimal size, into work[0]. */
void sgeqrf_(const int *m, const int *n, float *a, const int *lda, float *tau, float *work, const int *lwork,
             int *info);
void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda, const float *tau, float *work,
             const int *lwork, int *info);

#endif
