/* names.c - enum names, one style for every enum: KFAC_NAMED_ENUM
 * (common.h) defines an enum's kfac_X_name and kfac_X_from_name from an
 * expression naming row k of its table (a name array, or a type table such
 * as the activations' or the optimizers'), and the look-up is here. */
#include <stdio.h>
#include <string.h>

#include "common.h"

/* The optimizer kinds' names: here, below the optimizer table and the
 * parameter table that both use them. */
static const char *const optimizer_names[KFAC_OPT_COUNT] = {
    [KFAC_OPT_SGD] = "sgd", [KFAC_OPT_MOMENTUM] = "momentum", [KFAC_OPT_NESTEROV] = "nesterov",
    [KFAC_OPT_ADAM] = "adam", [KFAC_OPT_KFAC] = "kfac"};

kfac_status kfac_enum_lookup(const char *(*name_of)(int k), int count, const char *what, const char *name,
                             int *out)
{
    for (int i = 0; name && i < count; i++) {
        const char *nm = name_of(i);
        if (nm && strcmp(name, nm) == 0) {
            *out = i;
            return KFAC_OK;
        }
    }
    /* the valid names, from the table, so the message follows it */
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < count; i++) {
        const char *nm = name_of(i);
        if (!nm)
            continue; /* a row not filled in */
        int w = snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", nm);
        if (w < 0 || (size_t)w >= sizeof list - len)
            break;
        len += (size_t)w;
    }
    return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown %s '%s' (%s)", what, name ? name : "(null)", list);
}

KFAC_NAMED_ENUM(kfac_optimizer_kind, kfac_optimizer, optimizer_names[k], KFAC_OPT_COUNT, "optimizer")
