/* ckio.h - the checkpoint byte format's primitives. Every stateful object
 * (network, optimizer, K-FAC factors and step state, trainer) lists its
 * fields once, in a *_io function that calls the kfac_ckio_* visitors
 * below; the same list then writes a checkpoint (little-endian, byte by
 * byte), checks one without touching the object, or reads it back. So save
 * and load cannot drift apart.
 *
 * A file is: magic "KFACCKPT", u32 version, u32 content kind, u64 payload
 * length, the payload, u32 zlib crc32 of everything before it. */
#ifndef KFAC_CKIO_H
#define KFAC_CKIO_H

#include "kfac.h"

/* The newest format this library reads. It writes the oldest that holds
 * the state: version 1, unless a trainer stopped in the middle of an
 * epoch, whose position there (examples done, their loss) version 2 adds
 * after the trainer's other fields, or the network has spatial layers,
 * whose kinds and windows version 3 adds to the architecture (and which
 * then holds version 2's fields too). */
#define KFAC_CKPT_VERSION 3u

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
    uint32_t version;   /* WRITE: the header's (1; an object whose state
                           needs a later version raises it); else the
                           file's */
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

/* What a file holds; a trainer's file also gives kfac_net_load_checkpoint
 * its network. */
enum { KFAC_CKPT_TRAINER = 1, KFAC_CKPT_PRECOND = 2 };

/* A WRITE visitor with room for the header, filled in by finish_write. */
void kfac_ckio_start_write(kfac_ckio *io);
/* Header, crc32, then the bytes into path.tmpXXXXXX, flushed, fsync'ed and
 * renamed over path: a crash leaves either the old file or the new. Frees
 * io's buffer. */
kfac_status kfac_ckio_finish_write(kfac_ckio *io, uint32_t content, const char *path);
/* Read path and check its container (magic, version, content kind, length,
 * crc32); *io is then a READ visitor over the payload, inside *data, which
 * the caller frees. */
kfac_status kfac_ckio_read_file(const char *path, uint32_t content, unsigned char **data, kfac_ckio *io);
/* st, with the detail of the failure prefixed by the file name. */
kfac_status kfac_ckio_fail_file(kfac_status st, const char *path);

#endif
