/* zread.h - reading a data file that may be gzipped (idx.c, csv.c): a
 * plain file's bytes, or the decompressed bytes of its gzip members, and
 * nothing after them. */
#ifndef KFAC_ZREAD_H
#define KFAC_ZREAD_H

#include <stddef.h>
#include <zlib.h>

#include "kfac.h"

typedef struct kfac_zread {
    const char *path;    /* for messages: every one starts "<path>: " */
    int fd;
    int gzip;            /* the file starts with gzip's magic 1f 8b */
    int end;             /* no more data: the end of the file, or of its last member */
    int cut;             /* a gzip member ended with the file (truncated) */
    z_stream zs;         /* gzip: the member being inflated */
    int zs_live;
    unsigned char *in;   /* in_cap bytes read from the file; the unused ones
                            are in[pos .. pos + have) */
    size_t in_cap, pos, have;
    long long consumed;  /* bytes of the file taken out of `in` so far */
} kfac_zread;

/* Open `path` and look at its first bytes. KFAC_ERR_IO (cannot open,
 * read error: the message says which) or KFAC_ERR_NOMEM; on failure
 * nothing is left open. */
kfac_status kfac_zread_open(kfac_zread *f, const char *path);
/* Up to len bytes into buf; *got < len only at the end of the data (then
 * f->cut says whether a gzip stream ended early). Gzip members may follow
 * each other (as gzip writes them); any other byte after the last one is
 * KFAC_ERR_FORMAT "<path>: N bytes after the end of the gzip stream (not
 * gzip)", so nothing is ignored without a word. A corrupt stream is
 * KFAC_ERR_FORMAT "<path>: corrupt gzip stream (zlib's reason)". */
kfac_status kfac_zread_read(kfac_zread *f, void *buf, size_t len, size_t *got);
void kfac_zread_close(kfac_zread *f);

#endif
