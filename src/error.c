/* error.c - status names and the per-thread detail of the last failure;
 * the library's version. */
#include <stdarg.h>
#include <stdio.h>

#include "common.h"

static _Thread_local char last_error[1024];

static const char *const status_names[] = {
    [KFAC_OK] = "success",
    [KFAC_ERR_NOMEM] = "out of memory",
    [KFAC_ERR_INVALID_ARG] = "invalid argument",
    [KFAC_ERR_IO] = "input/output error",
    [KFAC_ERR_FORMAT] = "malformed data file",
    [KFAC_ERR_PARSE] = "malformed net file",
    [KFAC_ERR_SHAPE] = "sizes do not match",
    [KFAC_ERR_NUMERIC] = "numerical failure",
    [KFAC_ERR_STATE] = "call out of order",
    [KFAC_ERR_COMM] = "communication between processes failed",
};
_Static_assert(sizeof status_names / sizeof *status_names == KFAC_STATUS_COUNT,
               "one name per status");

const char *kfac_strerror(kfac_status s)
{
    if ((unsigned)s >= KFAC_STATUS_COUNT)
        return "unknown status";
    return status_names[s];
}

const char *kfac_last_error(void) { return last_error; }

const char *kfac_version(void) { return KFAC_VERSION_STRING; }

void kfac_clear_error(void) { last_error[0] = '\0'; }

kfac_status kfac_fail(kfac_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}
