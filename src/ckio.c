/* ckio.c - the checkpoint byte format (ckio.h): the field visitors, the
 * container's header and checksum, atomic writing, and reading a file back
 * with the whole container verified (magic, version, length, crc32) before
 * anything is parsed. What a checkpoint holds is checkpoint.c's business. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "ckio.h"
#include "common.h"

/* The fuzzing build (tests/fuzz/) lets mutated files past the checksum, to
 * reach the parser behind it. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define CHECK_CRC 0
#else
#define CHECK_CRC 1
#endif

static const unsigned char MAGIC[8] = {'K', 'F', 'A', 'C', 'C', 'K', 'P', 'T'};
enum { HEADER = 24 }; /* magic, u32 version, u32 content, u64 payload length */

static const char *content_name(uint32_t c)
{
    return c == KFAC_CKPT_TRAINER ? "trainer" : c == KFAC_CKPT_PRECOND ? "preconditioner" : "unknown";
}

/* ------------------------------------------------------------ visitors */

static int reserve(kfac_ckio *io, size_t more)
{
    if (io->status != KFAC_OK)
        return 0;
    if (io->len + more <= io->cap)
        return 1;
    size_t cap = io->cap ? io->cap : 4096;
    while (cap < io->len + more)
        cap *= 2;
    unsigned char *b = realloc(io->buf, cap);
    if (!b) {
        io->status = kfac_fail(KFAC_ERR_NOMEM, "checkpoint buffer of %zu bytes: out of memory", cap);
        return 0;
    }
    io->buf = b;
    io->cap = cap;
    return 1;
}

/* little-endian, byte by byte, whatever the machine */
static void put(kfac_ckio *io, uint64_t v, int bytes)
{
    if (!reserve(io, (size_t)bytes))
        return;
    for (int i = 0; i < bytes; i++)
        io->buf[io->len++] = (unsigned char)(v >> (8 * i));
}

static int have(kfac_ckio *io, size_t bytes)
{
    if (io->status != KFAC_OK)
        return 0;
    if (bytes > io->len - io->pos) {
        io->status = kfac_fail(KFAC_ERR_FORMAT, "the checkpoint ends early (byte %zu of %zu)", io->pos, io->len);
        return 0;
    }
    return 1;
}

static uint64_t get(kfac_ckio *io, int bytes)
{
    uint64_t v = 0;
    if (!have(io, (size_t)bytes))
        return 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)io->buf[io->pos++] << (8 * i);
    return v;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Write v, or read and return the file's value (stored by the caller only
 * in READ mode: CHECK validates without touching the object). */
static uint64_t scalar(kfac_ckio *io, uint64_t v, int bytes)
{
    if (io->mode == KFAC_CKIO_WRITE) {
        put(io, v, bytes);
        return v;
    }
    return get(io, bytes);
}

static int storing(const kfac_ckio *io) { return io->mode == KFAC_CKIO_READ && io->status == KFAC_OK; }

void kfac_ckio_u64(kfac_ckio *io, uint64_t *v)
{
    uint64_t x = scalar(io, *v, 8);
    if (storing(io))
        *v = x;
}

void kfac_ckio_u32(kfac_ckio *io, uint32_t *v)
{
    uint32_t x = (uint32_t)scalar(io, *v, 4);
    if (storing(io))
        *v = x;
}

void kfac_ckio_long(kfac_ckio *io, long *v)
{
    int64_t x = (int64_t)scalar(io, (uint64_t)(int64_t)*v, 8);
    if (storing(io))
        *v = (long)x;
}

void kfac_ckio_int(kfac_ckio *io, int *v)
{
    int64_t x = (int64_t)scalar(io, (uint64_t)(int64_t)*v, 8);
    if (io->mode != KFAC_CKIO_WRITE && io->status == KFAC_OK && (x < -2147483647 - 1 || x > 2147483647))
        io->status = kfac_fail(KFAC_ERR_FORMAT, "a counter of %lld does not fit an int", (long long)x);
    if (storing(io))
        *v = (int)x;
}

/* The file's value is checked in CHECK mode too (the dry run that
 * kfac_trainer_load makes before it stores anything), not the object's. */
void kfac_ckio_int_range(kfac_ckio *io, int *v, int lo, int hi, const char *what)
{
    int64_t x = (int64_t)scalar(io, (uint64_t)(int64_t)*v, 8);
    if (io->mode != KFAC_CKIO_WRITE && io->status == KFAC_OK && (x < lo || x > hi))
        io->status = kfac_fail(KFAC_ERR_FORMAT, "%s of %lld outside [%d, %d]", what, (long long)x, lo, hi);
    if (storing(io))
        *v = (int)x;
}

void kfac_ckio_f64(kfac_ckio *io, double *v)
{
    uint64_t bits;
    memcpy(&bits, v, sizeof bits);
    bits = scalar(io, bits, 8);
    if (storing(io))
        memcpy(v, &bits, sizeof bits);
}

void kfac_ckio_f32(kfac_ckio *io, float *v)
{
    uint32_t x = (uint32_t)scalar(io, f32_bits(*v), 4);
    if (storing(io))
        *v = bits_f32(x);
}

void kfac_ckio_expect(kfac_ckio *io, uint64_t v, const char *what)
{
    uint64_t x = scalar(io, v, 8);
    if (io->mode != KFAC_CKIO_WRITE && io->status == KFAC_OK && x != v)
        io->status = kfac_fail(KFAC_ERR_SHAPE, "%s is %llu in the checkpoint but %llu here", what,
                               (unsigned long long)x, (unsigned long long)v);
}

void kfac_ckio_floats(kfac_ckio *io, float *v, size_t n, const char *what)
{
    kfac_ckio_expect(io, n, what);
    if (io->mode == KFAC_CKIO_WRITE) {
        if (n > SIZE_MAX / 4 || !reserve(io, 4 * n))
            return;
        unsigned char *b = io->buf + io->len;
        for (size_t i = 0; i < n; i++, b += 4) {
            uint32_t u = f32_bits(v[i]);
            b[0] = (unsigned char)u, b[1] = (unsigned char)(u >> 8);
            b[2] = (unsigned char)(u >> 16), b[3] = (unsigned char)(u >> 24);
        }
        io->len += 4 * n;
        return;
    }
    if (n > SIZE_MAX / 4 || !have(io, 4 * n))
        return;
    if (io->mode == KFAC_CKIO_READ) {
        const unsigned char *b = io->buf + io->pos;
        for (size_t i = 0; i < n; i++, b += 4)
            v[i] = bits_f32((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
    }
    io->pos += 4 * n;
}

void kfac_ckio_perm(kfac_ckio *io, uint32_t *v, size_t n)
{
    /* read back, each of [0, n) exactly once: a repeated entry (all zeros
     * under a valid crc) would train on one example */
    unsigned char *seen = NULL;
    if (io->mode != KFAC_CKIO_WRITE && io->status == KFAC_OK && !(seen = calloc(n / 8 + 1, 1)))
        io->status = kfac_fail(KFAC_ERR_NOMEM, "checking a data order of %zu entries: out of memory", n);
    for (size_t i = 0; i < n && io->status == KFAC_OK; i++) {
        uint32_t x = (uint32_t)scalar(io, v[i], 4);
        if (seen && io->status == KFAC_OK && x >= n)
            io->status = kfac_fail(KFAC_ERR_FORMAT, "data order entry %zu is %u, outside [0, %zu)", i, x, n);
        else if (seen && io->status == KFAC_OK && (seen[x / 8] >> (x % 8)) & 1)
            io->status = kfac_fail(KFAC_ERR_FORMAT, "data order entry %zu repeats %u: not a permutation", i, x);
        else if (seen)
            seen[x / 8] |= (unsigned char)(1u << (x % 8));
        if (storing(io))
            v[i] = x;
    }
    free(seen);
}

/* ----------------------------------------------------------------- files */

kfac_status kfac_ckio_fail_file(kfac_status st, const char *path)
{
    char detail[900];
    snprintf(detail, sizeof detail, "%s", kfac_last_error());
    return kfac_fail(st, "%s: %s", path, detail);
}

void kfac_ckio_start_write(kfac_ckio *io)
{
    memset(io, 0, sizeof *io);
    io->mode = KFAC_CKIO_WRITE;
    io->version = 1;
    if (reserve(io, HEADER))
        io->len = HEADER;
}

kfac_status kfac_ckio_finish_write(kfac_ckio *io, uint32_t content, const char *path)
{
    kfac_status st = io->status;
    char *tmp = NULL;
    int fd = -1;
    FILE *f = NULL;
    if (st != KFAC_OK)
        goto done;
    uint64_t payload = io->len - HEADER;
    io->len = 0;
    for (int i = 0; i < 8; i++)
        put(io, MAGIC[i], 1);
    put(io, io->version, 4);
    put(io, content, 4);
    put(io, payload, 8);
    io->len = HEADER + payload;
    put(io, (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), io->buf, io->len), 4);
    if ((st = io->status) != KFAC_OK)
        goto done;

    size_t plen = strlen(path);
    if (!(tmp = malloc(plen + 16))) {
        st = kfac_fail(KFAC_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmpXXXXXX", 11);
    if ((fd = mkstemp(tmp)) < 0) {
        st = kfac_fail(KFAC_ERR_IO, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto done;
    }
    /* mkstemp makes it 0600; a checkpoint gets the mode open() would give */
    mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, 0666 & ~mask);
    if (!(f = fdopen(fd, "wb"))) {
        st = kfac_fail(KFAC_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1; /* f owns it */
    if (fwrite(io->buf, 1, io->len, f) != io->len || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        st = kfac_fail(KFAC_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
        goto done;
    }
    int closed = fclose(f);
    f = NULL;
    if (closed != 0 || rename(tmp, path) != 0) {
        st = kfac_fail(KFAC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    /* the rename itself reaches the disk with the directory */
    char *dir = strdup(path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
        int dfd = open(d, O_RDONLY);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
done:
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(io->buf);
    io->buf = NULL;
    return st;
}

/* Read up to `want` bytes of f into *buf (capacity *cap, grown as data
 * arrives, so a header promising more than the file holds costs little);
 * *size counts what is there. 0 on success, else errno (ENOMEM). */
static int read_upto(FILE *f, unsigned char **buf, size_t *cap, size_t *size, size_t want)
{
    while (*size < want) {
        if (*size == *cap) {
            size_t ncap = *cap < want - *cap ? 2 * *cap : want;
            unsigned char *b = realloc(*buf, ncap);
            if (!b)
                return ENOMEM;
            *buf = b;
            *cap = ncap;
        }
        size_t got = fread(*buf + *size, 1, KFAC_MIN(*cap, want) - *size, f);
        *size += got;
        if (got == 0)
            return ferror(f) ? (errno ? errno : EIO) : 0;
    }
    return 0;
}

/* Read path and check everything about the container; *io is then a READ
 * visitor over the payload, inside *data, which the caller frees. Only the
 * magic, then the header, then what the header promises (and one byte more,
 * to notice trailing bytes) are read: a wrong path (/dev/zero, a data set)
 * is refused after 8 bytes, not read whole. */
kfac_status kfac_ckio_read_file(const char *path, uint32_t content, unsigned char **data, kfac_ckio *io)
{
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kfac_fail(KFAC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    int regular = fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode);
    size_t cap = 1 << 16, size = 0;
    unsigned char *buf = malloc(cap);
    int err = buf ? 0 : ENOMEM;
    uint64_t payload = 0;
    size_t total = 0; /* header + payload + crc, once known */
    if (!err)
        err = read_upto(f, &buf, &cap, &size, 8);
    int magic_ok = !err && size > 0 && memcmp(buf, MAGIC, KFAC_MIN(size, 8)) == 0;
    if (magic_ok && size == 8)
        err = read_upto(f, &buf, &cap, &size, HEADER + 4);
    if (magic_ok && !err && size >= HEADER) {
        for (int i = 0; i < 8; i++)
            payload |= (uint64_t)buf[16 + i] << (8 * i);
        /* beyond what a size_t addresses it cannot be there anyway */
        total = payload <= SIZE_MAX - HEADER - 5 ? HEADER + (size_t)payload + 4 : SIZE_MAX - 1;
        err = read_upto(f, &buf, &cap, &size, total + 1);
    }
    fclose(f);
    if (err == ENOMEM) {
        free(buf);
        return kfac_fail(KFAC_ERR_NOMEM, "%s: out of memory reading it", path);
    }
    if (err) {
        free(buf);
        return kfac_fail(KFAC_ERR_IO, "%s: cannot read: %s", path, strerror(err));
    }
    kfac_status st = KFAC_OK;
    if (!magic_ok) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: not a libkfac checkpoint (no KFACCKPT magic)", path);
        goto fail;
    }
    if (size < HEADER + 4) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: truncated checkpoint: %zu byte%s, not even a header", path, size,
                       KFAC_S(size));
        goto fail;
    }
    kfac_ckio h = {.mode = KFAC_CKIO_READ, .buf = buf, .len = HEADER, .pos = 8};
    uint32_t version = 0, kind = 0;
    kfac_ckio_u32(&h, &version);
    kfac_ckio_u32(&h, &kind);
    if (version < 1 || version > KFAC_CKPT_VERSION) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: checkpoint format version %u; this library reads versions 1 to %u",
                       path, version, KFAC_CKPT_VERSION);
        goto fail;
    }
    if (size < total) {
        unsigned long long promise = payload > UINT64_MAX - HEADER - 4 ? UINT64_MAX : payload + HEADER + 4;
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: truncated checkpoint: %zu bytes, the header promises %llu", path, size,
                       promise);
        goto fail;
    }
    if (size > total) {
        /* reading stopped one byte past the end; a regular file says how many */
        if (regular && (uint64_t)sb.st_size > total)
            st = kfac_fail(KFAC_ERR_FORMAT, "%s: corrupt checkpoint: %llu byte%s after its end", path,
                           (unsigned long long)sb.st_size - total, KFAC_S((uint64_t)sb.st_size - total));
        else
            st = kfac_fail(KFAC_ERR_FORMAT, "%s: corrupt checkpoint: bytes after its end", path);
        goto fail;
    }
    size_t body = HEADER + (size_t)payload;
    uint32_t want = (uint32_t)buf[body] | (uint32_t)buf[body + 1] << 8 | (uint32_t)buf[body + 2] << 16 |
                    (uint32_t)buf[body + 3] << 24;
    if (CHECK_CRC && (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), buf, body) != want) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: corrupt checkpoint: checksum mismatch", path);
        goto fail;
    }
    if (kind != content) {
        st = kfac_fail(KFAC_ERR_SHAPE, "%s: a %s checkpoint, not a %s one", path, content_name(kind),
                       content_name(content));
        goto fail;
    }
    memset(io, 0, sizeof *io);
    io->mode = KFAC_CKIO_READ;
    io->version = version;
    io->buf = buf + HEADER;
    io->len = (size_t)payload;
    *data = buf;
    return KFAC_OK;
fail:
    free(buf);
    return st;
}
