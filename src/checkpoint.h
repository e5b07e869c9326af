/* checkpoint.h - the checkpoint format's primitives. Every stateful object
 * (network, optimizer, K-FAC factors and step state, trainer) lists its
 * fields once, in a *_io function that calls the kfac_ckio_* visitors
 * below; the same list then writes a checkpoint (little-endian, byte by
 * byte), checks one without touching the object, or reads it back. So save
 * and load cannot drift apart.
 *
 * A file is: magic "KFACCKPT", u32 version, u32 content kind, u64 payload
 * length, the payload, u32 zlib crc32 of everything before it. */
#ifndef KFAC_CHECKPOINT_H
#define KFAC_CHECKPOINT_H

#include "kfac.h"

#define KFAC_CKPT_VERSION 1u

typedef enum kfac_ckio_mode {
    KFAC_CKIO_WRITE, /* append the fields to buf */
    KFAC_CKIO_CHECK, /* parse and validate, store nothing */
    KFAC_CKIO_READ   /* parse and store into the object */
} kfac_ckio_mode;

typedef struct kfac_ckio {
    kfac_ckio_mode mode;
    unsigned char *buf; /* WRITE: grown as needed (owned); else the payload */
    size_t len, cap;    /* bytes in buf; WRITE: allocated */
    size_t pos;         /* CHECK/READ: next byte */
    kfac_status status; /* first failure (sticky; its detail is in
                           kfac_last_error()); later calls do nothing */
} kfac_ckio;

void kfac_ckio_u32(kfac_ckio *io, uint32_t *v);
void kfac_ckio_u64(kfac_ckio *io, uint64_t *v);
void kfac_ckio_int(kfac_ckio *io, int *v);   /* as i64; must fit an int */
void kfac_ckio_long(kfac_ckio *io, long *v); /* as i64 */
/* An int that must lie in [lo, hi] (KFAC_ERR_FORMAT naming `what`). */
void kfac_ckio_int_range(kfac_ckio *io, int *v, int lo, int hi, const char *what);
void kfac_ckio_f64(kfac_ckio *io, double *v);
void kfac_ckio_f32(kfac_ckio *io, float *v);
/* n floats preceded by n: a file with another n belongs to another object
 * (KFAC_ERR_SHAPE naming `what`), and nothing is stored. */
void kfac_ckio_floats(kfac_ckio *io, float *v, size_t n, const char *what);
/* n entries of a permutation of [0, n) (precede it with an expect of n);
 * entries >= n are KFAC_ERR_FORMAT. */
void kfac_ckio_perm(kfac_ckio *io, uint32_t *v, size_t n);
/* A value the file must share with the object (a size, a kind): written,
 * or read and compared (KFAC_ERR_SHAPE naming `what`). */
void kfac_ckio_expect(kfac_ckio *io, uint64_t v, const char *what);

/* The visitors of the objects that make up a checkpoint. */
kfac_optimizer_kind kfac_trainer_optimizer(const kfac_trainer *t);
void kfac_precond_io(kfac_precond *pc, kfac_ckio *io);
void kfac_optimizer_io(kfac_optimizer *opt, kfac_ckio *io);
void kfac_trainer_io(kfac_trainer *t, kfac_ckio *io);
/* In a process group: every rank's status of a step all must take or skip
 * together (the worst of them); alone: st. Collective. */
kfac_status kfac_trainer_agree(kfac_trainer *t, kfac_status st);

#endif
