/* zread.c - a data file, gzipped or plain, read as its bytes: inflate over
 * a buffer of the file, member after member, refusing whatever else
 * follows the last member (zlib's gzread drops such bytes without a word). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "zread.h"

/* input buffer: small files get a small one (a fuzzer reads many), big
 * ones 256 KiB */
#define ZREAD_SMALL (1u << 14)
#define ZREAD_BIG (1u << 18)

/* Move the unused input to the front and read more after it. */
static kfac_status refill(kfac_zread *f)
{
    if (f->pos > 0 && f->have > 0)
        memmove(f->in, f->in + f->pos, f->have);
    f->pos = 0;
    while (f->have < f->in_cap) {
        ssize_t r = read(f->fd, f->in + f->have, f->in_cap - f->have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return kfac_fail(KFAC_ERR_IO, "%s: read error: %s", f->path, strerror(errno));
        if (r == 0)
            break;
        f->have += (size_t)r;
    }
    return KFAC_OK;
}

static void take(kfac_zread *f, size_t n)
{
    f->pos += n;
    f->have -= n;
    f->consumed += (long long)n;
}

kfac_status kfac_zread_open(kfac_zread *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return kfac_fail(KFAC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    f->in_cap = fstat(f->fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size < (off_t)ZREAD_SMALL ? ZREAD_SMALL
                                                                                                   : ZREAD_BIG;
    kfac_status st = KFAC_OK;
    if (!(f->in = malloc(f->in_cap)))
        st = kfac_fail(KFAC_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, f->in_cap);
    else
        st = refill(f);
    if (st == KFAC_OK && f->have >= 2 && f->in[0] == 0x1f && f->in[1] == 0x8b) {
        f->gzip = 1;
        /* 16 + MAX_WBITS: a gzip wrapper, its header and crc checked */
        if (inflateInit2(&f->zs, 16 + MAX_WBITS) != Z_OK)
            st = kfac_fail(KFAC_ERR_NOMEM, "%s: out of memory in zlib", path);
        else
            f->zs_live = 1;
    }
    if (st != KFAC_OK)
        kfac_zread_close(f);
    return st;
}

void kfac_zread_close(kfac_zread *f)
{
    if (f->zs_live)
        inflateEnd(&f->zs);
    if (f->fd >= 0)
        close(f->fd);
    free(f->in);
    f->zs_live = 0;
    f->fd = -1;
    f->in = NULL;
}

/* After a member's end: another member, the end of the file, or bytes
 * that are neither. */
static kfac_status after_member(kfac_zread *f)
{
    kfac_status st;
    if (f->have < 2 && (st = refill(f)) != KFAC_OK)
        return st;
    if (f->have == 0) {
        f->end = 1;
        return KFAC_OK;
    }
    if (f->have >= 2 && f->in[f->pos] == 0x1f && f->in[f->pos + 1] == 0x8b) {
        inflateReset(&f->zs);
        return KFAC_OK;
    }
    struct stat sb;
    if (fstat(f->fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > f->consumed) {
        long long extra = (long long)sb.st_size - f->consumed;
        return kfac_fail(KFAC_ERR_FORMAT, "%s: %lld byte%s after the end of the gzip stream (not gzip)", f->path,
                         extra, KFAC_S(extra));
    }
    return kfac_fail(KFAC_ERR_FORMAT, "%s: bytes after the end of the gzip stream (not gzip)", f->path);
}

kfac_status kfac_zread_read(kfac_zread *f, void *buf, size_t len, size_t *got)
{
    unsigned char *out = buf;
    kfac_status st = KFAC_OK;
    *got = 0;
    while (*got < len && !f->end) {
        if (f->have == 0 && (st = refill(f)) != KFAC_OK)
            return st;
        if (!f->gzip) {
            if (f->have == 0) {
                f->end = 1;
                break;
            }
            size_t n = KFAC_MIN(len - *got, f->have);
            memcpy(out + *got, f->in + f->pos, n);
            take(f, n);
            *got += n;
            continue;
        }
        if (f->have == 0) { /* the file ended inside a member */
            f->end = f->cut = 1;
            break;
        }
        size_t want = KFAC_MIN(len - *got, (size_t)UINT_MAX);
        f->zs.next_in = f->in + f->pos;
        f->zs.avail_in = (uInt)KFAC_MIN(f->have, (size_t)UINT_MAX);
        f->zs.next_out = out + *got;
        f->zs.avail_out = (uInt)want;
        int r = inflate(&f->zs, Z_NO_FLUSH);
        take(f, (size_t)(f->zs.next_in - (f->in + f->pos)));
        *got += want - f->zs.avail_out;
        if (r == Z_STREAM_END) {
            if ((st = after_member(f)) != KFAC_OK)
                return st;
        } else if (r == Z_MEM_ERROR) {
            return kfac_fail(KFAC_ERR_NOMEM, "%s: out of memory in zlib", f->path);
        } else if (r == Z_DATA_ERROR || r == Z_NEED_DICT || r == Z_STREAM_ERROR) {
            return kfac_fail(KFAC_ERR_FORMAT, "%s: corrupt gzip stream (%s)", f->path,
                             f->zs.msg ? f->zs.msg : "bad data");
        }
        /* Z_OK, or Z_BUF_ERROR with all input used: read more */
    }
    return KFAC_OK;
}
