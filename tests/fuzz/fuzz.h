/* fuzz.h - what the libFuzzer harnesses share: the library reads files by
 * name, so each input is handed over as an in-memory file (memfd) named
 * /proc/self/fd/N (memfd_create: built with -D_GNU_SOURCE), and a broken invariant ends the run with abort() so that
 * libFuzzer records the input. */
#ifndef KFAC_FUZZ_H
#define KFAC_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kfac.h"

/* An in-memory file that holds the bytes the next call puts in it. */
typedef struct fuzz_file {
    int fd;
    char path[64];
} fuzz_file;

static inline void fuzz_file_open(fuzz_file *f, const char *name)
{
    f->fd = memfd_create(name, 0);
    if (f->fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

static inline void fuzz_file_put(fuzz_file *f, const uint8_t *data, size_t size)
{
    if (ftruncate(f->fd, 0) != 0 || (size && pwrite(f->fd, data, size, 0) != (ssize_t)size)) {
        perror("memfd write");
        abort();
    }
}

/* Abort (a finding) with the reason when an invariant is broken. */
#define FUZZ_REQUIRE(cond, ...)                                                                                 \
    do {                                                                                                      \
        if (!(cond)) {                                                                                        \
            fprintf(stderr, "invariant broken: %s: ", #cond);                                                 \
            fprintf(stderr, __VA_ARGS__);                                                                     \
            fputc('\n', stderr);                                                                              \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)

/* A failure must say what went wrong and name the file. */
static inline void fuzz_require_named(kfac_status st, const char *path)
{
    const char *msg = kfac_last_error();
    FUZZ_REQUIRE(st != KFAC_OK && msg && strstr(msg, path), "status %d, message \"%s\" should name %s", (int)st,
                 msg ? msg : "(null)", path);
}

#endif
