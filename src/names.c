/* names.c - enum names, one style for every enum: each has a table whose
 * rows begin with `const char *name` (a plain name array, or a type table
 * such as the optimizers'), and KFAC_NAMED_ENUM (common.h) defines its
 * kfac_X_name and kfac_X_from_name from that table. */
#include <stdio.h>
#include <string.h>

#include "common.h"

/* row k's name: rows of `stride` bytes, each starting with a const char * */
static const char *row_name(const void *rows, size_t stride, int k)
{
    return *(const char *const *)(const void *)((const char *)rows + (size_t)k * stride);
}

const char *kfac_enum_name(const void *rows, size_t stride, int count, int k)
{
    return k >= 0 && k < count ? row_name(rows, stride, k) : NULL;
}

kfac_status kfac_enum_lookup(const void *rows, size_t stride, int count, const char *what, const char *name,
                             int *out)
{
    for (int i = 0; name && i < count; i++) {
        const char *nm = row_name(rows, stride, i);
        if (nm && strcmp(name, nm) == 0) {
            *out = i;
            return KFAC_OK;
        }
    }
    /* the valid names, from the table, so the message follows it */
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < count; i++) {
        const char *nm = row_name(rows, stride, i);
        if (!nm)
            continue; /* a row not filled in */
        int w = snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", nm);
        if (w < 0 || (size_t)w >= sizeof list - len)
            break;
        len += (size_t)w;
    }
    return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown %s '%s' (%s)", what, name ? name : "(null)", list);
}
