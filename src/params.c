/* params.c - typed values with ranges (params.h), and the one table of
 * training parameters: defaults, validation, access by name and the
 * documentation all read it. Adding a [train] or [kfac] setting is a field
 * in include/kfac.h and a row below; the net file, the command line,
 * --help and the state hash follow. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "params.h"

/* ------------------------------------------------------------- values */

void kfac_value_range(const kfac_value_spec *v, char *buf, size_t size)
{
    if (v->type == KFAC_V_ENUM) {
        size_t n = 0;
        buf[0] = '\0';
        for (int i = 0; i < v->count && n < size; i++)
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? " | " : "", v->name_of(i));
    } else if (v->type == KFAC_V_U64) {
        snprintf(buf, size, "0 or more");
    } else {
        snprintf(buf, size, "%c%.10g, %.10g%c", (v->bounds & KFAC_OPEN_LO) ? '(' : '[', v->lo, v->hi,
                 (v->bounds & KFAC_OPEN_HI) ? ')' : ']');
    }
}

static int in_range(const kfac_value_spec *v, double x)
{
    /* the negated comparisons also reject NaN */
    return (x >= v->lo && x <= v->hi) && !((v->bounds & KFAC_OPEN_LO) && x == v->lo) &&
           !((v->bounds & KFAC_OPEN_HI) && x == v->hi);
}

static kfac_status out_of_range(const kfac_value_spec *v, const char *key, const char *text)
{
    char range[128];
    kfac_value_range(v, range, sizeof range);
    return kfac_fail(KFAC_ERR_INVALID_ARG, "%s = %s is outside %s", key, text, range);
}

_Static_assert(sizeof(kfac_optimizer_kind) == sizeof(int) && sizeof(kfac_loss) == sizeof(int) &&
                   sizeof(float) == sizeof(int),
               "enums are stored as int; a float field is as wide as an int (the state hash)");

kfac_status kfac_value_parse(const kfac_value_spec *v, const char *key, const char *text, void *field)
{
    char *end;
    errno = 0;
    switch (v->type) {
    case KFAC_V_INT: {
        long x = strtol(text, &end, 10);
        if (end == text || *end != '\0')
            return kfac_fail(KFAC_ERR_INVALID_ARG, "%s needs an integer, got '%s'", key, text);
        if (errno == ERANGE || !in_range(v, (double)x))
            return out_of_range(v, key, text);
        *(int *)field = (int)x;
        return KFAC_OK;
    }
    case KFAC_V_FLOAT: {
        double x = strtod(text, &end);
        if (end == text || *end != '\0')
            return kfac_fail(KFAC_ERR_INVALID_ARG, "%s needs a number, got '%s'", key, text);
        /* check the float that is stored (0.999999999 rounds to 1) */
        double f = (float)x;
        if (!in_range(v, f))
            return out_of_range(v, key, text);
        *(float *)field = (float)f;
        return KFAC_OK;
    }
    case KFAC_V_U64: {
        /* strtoull would quietly wrap "-1" (and " -1") to 2^64-1 */
        unsigned long long x = strtoull(text, &end, 10);
        const char *sign = text + strspn(text, " \t\n\v\f\r");
        if (end == text || *end != '\0' || *sign == '-' || *sign == '+')
            return kfac_fail(KFAC_ERR_INVALID_ARG, "%s needs a non-negative integer, got '%s'", key, text);
        if (errno == ERANGE)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "%s = %s is larger than 2^64-1", key, text);
        *(uint64_t *)field = (uint64_t)x;
        return KFAC_OK;
    }
    case KFAC_V_ENUM: {
        int k = 0;
        kfac_status st = kfac_enum_lookup(v->name_of, v->count, v->what, text, &k);
        if (st == KFAC_OK)
            *(int *)field = k;
        return st;
    }
    }
    return kfac_fail(KFAC_ERR_INVALID_ARG, "%s has no value type", key);
}

/* ------------------------------------------------------------- the table */

/* the enums' names by index, for the table */
static const char *optimizer_name(int k) { return kfac_optimizer_name((kfac_optimizer_kind)k); }
static const char *fisher_name(int k) { return kfac_fisher_name((kfac_fisher_kind)k); }
static const char *inversion_name(int k) { return kfac_inversion_name((kfac_inversion)k); }
static const char *rule_name(int k) { return kfac_step_rule_name((kfac_step_rule)k); }
static const char *lr_schedule_name(int k) { return kfac_lr_schedule_name((kfac_lr_schedule)k); }

#define INT(lo, hi) {KFAC_V_INT, lo, hi, KFAC_CLOSED, NULL, NULL, 0}
#define FLOAT(lo, hi, bounds) {KFAC_V_FLOAT, lo, hi, bounds, NULL, NULL, 0}
#define ENUM(what, names, count) {KFAC_V_ENUM, 0, 0, KFAC_CLOSED, what, names, count}
#define TRAIN(f) KFAC_PART_TRAIN, offsetof(kfac_train_params, f)
#define OPTIM(f) KFAC_PART_OPTIM, offsetof(kfac_optim_params, f)
#define KFAC(f) KFAC_PART_KFAC, offsetof(kfac_kfac_params, f)
#define OPEN_LO KFAC_OPEN_LO
#define OPEN_HI KFAC_OPEN_HI

/* Defaults: docs/algorithm.md §13 says where each comes from. */
const kfac_param_def kfac_param_defs[] = {
    {"train", "optimizer", "--optimizer", TRAIN(optimizer), ENUM("optimizer", optimizer_name, KFAC_OPT_COUNT),
     KFAC_OPT_MOMENTUM, NULL, "the optimizer (train)"},
    {"train", "lr", "--lr", OPTIM(lr), FLOAT(0, 1000, OPEN_LO), 0.01, "kfac.lr", "learning rate; for kfac too"},
    {"train", "momentum", "--momentum", OPTIM(momentum), FLOAT(0, 1, OPEN_HI), 0.9, "kfac.momentum",
     "momentum of momentum, nesterov and kfac"},
    {"train", "beta1", "--beta1", OPTIM(beta1), FLOAT(0, 1, OPEN_HI), 0.9, NULL, "Adam's first-moment decay"},
    {"train", "beta2", "--beta2", OPTIM(beta2), FLOAT(0, 1, OPEN_HI), 0.999, NULL, "Adam's second-moment decay"},
    {"train", "eps", "--eps", OPTIM(eps), FLOAT(0, 1, OPEN_LO), 1e-8, NULL, "Adam's epsilon"},
    {"train", "weight_decay", "--weight-decay", OPTIM(weight_decay), FLOAT(0, 1000, 0), 0.0, NULL,
     "L2 coefficient added to the gradient"},
    {"train", "batch", "--batch", TRAIN(batch), INT(1, 1000000), 128, NULL, "minibatch size"},
    {"train", "epochs", "--epochs", TRAIN(epochs), INT(1, 100000), 10, NULL, "passes over the training set"},
    {"train", "lr_schedule", "--lr-schedule", TRAIN(lr_schedule), ENUM("lr schedule", lr_schedule_name, KFAC_LR_COUNT),
     KFAC_LR_CONSTANT, NULL, "constant: lr; step: lr x lr_step_factor every lr_step_epochs; cosine: down to 0"},
    {"train", "warmup_epochs", "--warmup-epochs", TRAIN(warmup_epochs), FLOAT(0, 100000, 0), 0.0, NULL,
     "the learning rate rises linearly from 0 over these epochs first"},
    {"train", "lr_step_epochs", "--lr-step-epochs", TRAIN(lr_step_epochs), INT(1, 100000), 30, NULL,
     "step schedule: epochs between drops"},
    {"train", "lr_step_factor", "--lr-step-factor", TRAIN(lr_step_factor), FLOAT(0, 1, OPEN_LO), 0.1, NULL,
     "step schedule: each drop's factor"},
    {"train", "seed", "--seed", TRAIN(seed), {KFAC_V_U64, 0, 0, 0, NULL, NULL, 0}, 1, NULL,
     "seed for weights and data order"},
    {"train", "val_fraction", "--val-fraction", TRAIN(val_fraction), FLOAT(0, 1, OPEN_HI), 0.0, NULL,
     "hold out the last fraction of the training set to validate each epoch (0: none)"},
    {"train", "early_stop", "--early-stop", TRAIN(early_stop), INT(0, 100000), 0, NULL,
     "stop when the validation loss has not improved for N epochs (0: off)"},
    {"train", "label_column", "--label-column", TRAIN(label_column), INT(1, 1000001), 1, NULL,
     "CSV data: the label's column, 1-based"},

    {"kfac", "damping", "--damping", KFAC(damping), FLOAT(0, 1e6, OPEN_LO), 0.1, NULL, "Tikhonov damping lambda"},
    {"kfac", "damping_half_life", "--damping-half-life", KFAC(damping_half_life), INT(0, 100000000), 0, NULL,
     "kl_clip rule: the damping halves every N steps (0: constant)"},
    {"kfac", "decay", "--decay", KFAC(decay), FLOAT(0, 1, OPEN_HI), 0.95, NULL,
     "running-average decay of the factors"},
    {"kfac", "cov_every", "--cov-every", KFAC(cov_every), INT(1, 1000000), 10, NULL,
     "factor statistics every N steps (T_cov)"},
    {"kfac", "inv_every", "--inv-every", KFAC(inv_every), INT(1, 1000000), 100, NULL,
     "inverses every N steps (T_inv)"},
    {"kfac", "stat_fraction", "--stat-fraction", KFAC(stat_fraction), FLOAT(0, 1, OPEN_LO), 1.0, NULL,
     "fraction of the batch for statistics"},
    {"kfac", "fisher", "--fisher", KFAC(fisher), ENUM("Fisher kind", fisher_name, KFAC_FISHER_COUNT),
     KFAC_FISHER_SAMPLED, NULL, "sampled: the Fisher; empirical: not the Fisher"},
    {"kfac", "inversion", "--inversion", KFAC(inversion), ENUM("inversion", inversion_name, KFAC_INV_COUNT),
     KFAC_INV_LOWRANK, NULL, "lowrank: top eigenpairs (fast); cholesky: dense; eigen: exact damping; ekfac: diagonal re-estimated; tridiag: layers coupled"},
    {"kfac", "rank_max", "--rank-max", KFAC(rank_max), INT(1, 4096), 64, NULL,
     "lowrank: eigenpairs kept per factor at most"},
    {"kfac", "rule", "--rule", KFAC(rule), ENUM("step rule", rule_name, KFAC_RULE_COUNT), KFAC_RULE_KL_CLIP, NULL,
     "kl_clip: lr, momentum, KL clipping; quadratic: exact F products"},
    {"kfac", "kl_clip", "--kl-clip", KFAC(kl_clip), FLOAT(0, 1e6, OPEN_LO), 1e-3, NULL,
     "KL budget c of the kl_clip rule"},
    {"kfac", "lm_every", "--lm-every", KFAC(lm_every), INT(1, 1000000), 5, NULL,
     "quadratic rule: damping adapted every N steps"},
    {"kfac", "fvp_fraction", "--fvp-fraction", KFAC(fvp_fraction), FLOAT(0, 1, OPEN_LO), 1.0, NULL,
     "quadratic rule: exact F products on this fraction of the batch"},
    {"kfac", "lr", "--kfac-lr", KFAC(lr), FLOAT(0, 1000, 0), 0.0, NULL, "K-FAC's own learning rate (0: lr's)"},
    {"kfac", "momentum", "--kfac-momentum", KFAC(momentum), FLOAT(-1, 1, OPEN_HI), -1.0, NULL,
     "K-FAC's own momentum (negative: momentum's)"},
};
const int kfac_param_defs_count = (int)(sizeof kfac_param_defs / sizeof *kfac_param_defs);
_Static_assert(sizeof kfac_param_defs / sizeof *kfac_param_defs <= KFAC_MAX_PARAMS, "raise KFAC_MAX_PARAMS");

int kfac_param_find(const char *section, const char *key)
{
    int found = -1;
    for (int i = 0; key && i < kfac_param_defs_count; i++) {
        const kfac_param_def *d = &kfac_param_defs[i];
        if (strcmp(d->key, key) != 0 || (section && strcmp(d->section, section) != 0))
            continue;
        if (found >= 0)
            return -1; /* a bare key two sections share */
        found = i;
    }
    return found;
}

static void *part_base(kfac_param_part part, kfac_train_params *p)
{
    return part == KFAC_PART_OPTIM ? (void *)&p->optim : part == KFAC_PART_KFAC ? (void *)&p->kfac : (void *)p;
}

void *kfac_param_field(const kfac_param_def *d, kfac_train_params *p)
{
    return (char *)part_base(d->part, p) + d->offset;
}

/* "lr", or "kfac.lr" where another section has the key too */
static const char *display_name(const kfac_param_def *d, char *buf, size_t size)
{
    int shared = 0;
    for (int i = 0; i < kfac_param_defs_count; i++)
        shared += strcmp(kfac_param_defs[i].key, d->key) == 0;
    if (shared < 2)
        return d->key;
    snprintf(buf, size, "%s.%s", d->section, d->key);
    return buf;
}

/* ----------------------------------------------- defaults and validation */

static void init_part(kfac_param_part part, void *base)
{
    for (int i = 0; i < kfac_param_defs_count; i++) {
        const kfac_param_def *d = &kfac_param_defs[i];
        if (d->part != part)
            continue;
        void *f = (char *)base + d->offset;
        switch (d->v.type) {
        case KFAC_V_FLOAT:
            *(float *)f = (float)d->def;
            break;
        case KFAC_V_U64:
            *(uint64_t *)f = (uint64_t)d->def;
            break;
        case KFAC_V_INT:
        case KFAC_V_ENUM:
            *(int *)f = (int)d->def;
            break;
        }
    }
}

static kfac_status validate_part(kfac_param_part part, const void *base)
{
    for (int i = 0; i < kfac_param_defs_count; i++) {
        const kfac_param_def *d = &kfac_param_defs[i];
        if (d->part != part)
            continue;
        const void *f = (const char *)base + d->offset;
        char text[64], name[64];
        double x;
        switch (d->v.type) {
        case KFAC_V_U64:
            continue; /* any value */
        case KFAC_V_ENUM:
            if (!d->v.name_of(*(const int *)f))
                return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown %s %d", d->v.what, *(const int *)f);
            continue;
        case KFAC_V_FLOAT:
            x = *(const float *)f;
            break;
        case KFAC_V_INT:
        default:
            x = *(const int *)f;
            break;
        }
        if (!in_range(&d->v, x)) {
            snprintf(text, sizeof text, "%.9g", x);
            return out_of_range(&d->v, display_name(d, name, sizeof name), text);
        }
    }
    return KFAC_OK;
}

void kfac_optim_params_init(kfac_optim_params *p)
{
    if (p) {
        memset(p, 0, sizeof *p);
        init_part(KFAC_PART_OPTIM, p);
    }
}

void kfac_kfac_params_init(kfac_kfac_params *p)
{
    if (p) {
        memset(p, 0, sizeof *p);
        init_part(KFAC_PART_KFAC, p);
    }
}

void kfac_train_params_init(kfac_train_params *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof *p);
    init_part(KFAC_PART_TRAIN, p);
    kfac_optim_params_init(&p->optim);
    kfac_kfac_params_init(&p->kfac);
    for (int k = 0; k < KFAC_OPT_COUNT; k++) /* all "inherit" */
        for (int i = 0; i < kfac_param_defs_count; i++)
            if (kfac_param_defs[i].part == KFAC_PART_OPTIM)
                *(float *)((char *)&p->per_optimizer[k] + kfac_param_defs[i].offset) = NAN;
}

kfac_status kfac_optim_params_validate(const kfac_optim_params *p)
{
    return p ? validate_part(KFAC_PART_OPTIM, p)
             : kfac_fail(KFAC_ERR_INVALID_ARG, "optimizer parameters are NULL");
}

kfac_status kfac_kfac_params_validate(const kfac_kfac_params *p)
{
    return p ? validate_part(KFAC_PART_KFAC, p) : kfac_fail(KFAC_ERR_INVALID_ARG, "K-FAC parameters are NULL");
}

/* an optimizer's own settings: NaN (inherit) or in the [train] range */
static kfac_status validate_own(const kfac_train_params *p)
{
    for (int k = 0; k < KFAC_OPT_COUNT; k++)
        for (int i = 0; i < kfac_param_defs_count; i++) {
            const kfac_param_def *d = &kfac_param_defs[i];
            if (d->part != KFAC_PART_OPTIM)
                continue;
            double x = *(const float *)((const char *)&p->per_optimizer[k] + d->offset);
            if (x != x)
                continue;
            if (k == KFAC_OPT_KFAC) /* K-FAC's own are kfac.lr and kfac.momentum */
                return kfac_fail(KFAC_ERR_INVALID_ARG, "per_optimizer[kfac].%s is set: K-FAC's own settings are "
                                 "kfac.lr and kfac.momentum", d->key);
            if (!in_range(&d->v, x)) {
                char name[64], text[64];
                snprintf(name, sizeof name, "%s.%s", kfac_optimizer_name((kfac_optimizer_kind)k), d->key);
                snprintf(text, sizeof text, "%.9g", x);
                return out_of_range(&d->v, name, text);
            }
        }
    return KFAC_OK;
}

kfac_status kfac_train_params_validate(const kfac_train_params *p)
{
    if (!p)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "training parameters are NULL");
    kfac_status st = validate_part(KFAC_PART_TRAIN, p);
    if (st == KFAC_OK && p->early_stop > 0 && !(p->val_fraction > 0))
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "early_stop = %d needs a validation set: val_fraction > 0",
                       p->early_stop);
    if (st == KFAC_OK)
        st = validate_part(KFAC_PART_OPTIM, &p->optim);
    if (st == KFAC_OK)
        st = validate_part(KFAC_PART_KFAC, &p->kfac);
    return st == KFAC_OK ? validate_own(p) : st;
}

void kfac_train_params_resolve(const kfac_train_params *p, kfac_optim_params *out)
{
    if (!p || !out)
        return;
    *out = p->optim;
    if ((unsigned)p->optimizer >= KFAC_OPT_COUNT)
        return;
    for (int i = 0; i < kfac_param_defs_count; i++) {
        const kfac_param_def *d = &kfac_param_defs[i];
        if (d->part != KFAC_PART_OPTIM) /* (the offset is another struct's) */
            continue;
        float x = *(const float *)((const char *)&p->per_optimizer[p->optimizer] + d->offset);
        if (x == x)
            *(float *)((char *)out + d->offset) = x;
    }
    if (p->optimizer == KFAC_OPT_KFAC) {
        if (p->kfac.lr > 0.0f)
            out->lr = p->kfac.lr;
        if (p->kfac.momentum >= 0.0f)
            out->momentum = p->kfac.momentum;
    }
}

/* ------------------------------------------------------ access by name */

int kfac_param_optimizer_section(const char *section, kfac_optimizer_kind *kind)
{
    kfac_optimizer_kind k;
    if (!section || kfac_optimizer_from_name(section, &k) != KFAC_OK || k == KFAC_OPT_KFAC)
        return 0; /* (K-FAC's section is [kfac], its rows its own) */
    if (kind)
        *kind = k;
    return 1;
}

int kfac_param_slot_find(kfac_train_params *p, const char *section, const char *key, kfac_param_slot *out)
{
    kfac_optimizer_kind k;
    memset(out, 0, sizeof *out);
    if (kfac_param_optimizer_section(section, &k)) {
        int i = kfac_param_find("train", key);
        if (i < 0 || kfac_param_defs[i].part != KFAC_PART_OPTIM)
            return -1;
        out->d = &kfac_param_defs[i];
        out->field = (char *)&p->per_optimizer[k] + out->d->offset;
        out->inherits = 1;
        snprintf(out->name, sizeof out->name, "%s.%s", section, key);
        return 0;
    }
    int i = kfac_param_find(section, key);
    if (i < 0)
        return -1;
    out->d = &kfac_param_defs[i];
    out->field = kfac_param_field(out->d, p);
    char shown[64];
    snprintf(out->name, sizeof out->name, "%s", display_name(out->d, shown, sizeof shown));
    return 0;
}

kfac_status kfac_param_slot_set(const kfac_param_slot *s, const char *value)
{
    if (s->inherits && !strcmp(value, "inherit")) {
        *(float *)s->field = NAN;
        return KFAC_OK;
    }
    return kfac_value_parse(&s->d->v, s->name, value, s->field);
}

/* "kfac.damping", "adam.lr" or "damping" -> the slot in p */
static int lookup(kfac_train_params *p, const char *name, kfac_param_slot *out)
{
    const char *dot = name ? strchr(name, '.') : NULL;
    if (!dot)
        return kfac_param_slot_find(p, NULL, name, out);
    char section[16];
    size_t n = (size_t)(dot - name);
    if (n >= sizeof section)
        return -1;
    memcpy(section, name, n);
    section[n] = '\0';
    return kfac_param_slot_find(p, section, dot + 1, out);
}

static kfac_status unknown_name(const char *name)
{
    int rows = 0;
    for (int i = 0; name && i < kfac_param_defs_count; i++)
        rows += strcmp(kfac_param_defs[i].key, name) == 0;
    if (rows > 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "parameter '%s' is in two sections: say train.%s or kfac.%s", name,
                         name, name);
    return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown parameter '%s' (kfac_param_get_info lists them)",
                     name ? name : "(null)");
}

kfac_status kfac_train_params_set(kfac_train_params *p, const char *name, const char *value)
{
    kfac_clear_error();
    if (!p || !name || !value)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_train_params_set: NULL argument");
    kfac_param_slot s;
    if (lookup(p, name, &s) < 0)
        return unknown_name(name);
    return kfac_param_slot_set(&s, value);
}

/* the value of slot s as text; floats with %.9g, which reads back to the
 * same float, or (short) %g */
static void format_value(const kfac_param_slot *s, int exact, char *buf, size_t size)
{
    const void *f = s->field;
    switch (s->d->v.type) {
    case KFAC_V_FLOAT:
        if (s->inherits && *(const float *)f != *(const float *)f)
            snprintf(buf, size, "inherit");
        else
            snprintf(buf, size, exact ? "%.9g" : "%g", (double)*(const float *)f);
        break;
    case KFAC_V_U64:
        snprintf(buf, size, "%llu", (unsigned long long)*(const uint64_t *)f);
        break;
    case KFAC_V_ENUM: {
        const char *nm = s->d->v.name_of(*(const int *)f);
        snprintf(buf, size, "%s", nm ? nm : "?");
        break;
    }
    case KFAC_V_INT:
        snprintf(buf, size, "%d", *(const int *)f);
        break;
    }
}

kfac_status kfac_train_params_get(const kfac_train_params *p, const char *name, char *buf, size_t size)
{
    kfac_clear_error();
    if (!p || !name || !buf || size < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_train_params_get: NULL argument");
    kfac_param_slot s;
    if (lookup((kfac_train_params *)p, name, &s) < 0)
        return unknown_name(name);
    format_value(&s, 1, buf, size);
    return KFAC_OK;
}

int kfac_param_count(void) { return kfac_param_defs_count; }

kfac_status kfac_param_get_info(int i, kfac_param_info *out)
{
    if (!out || i < 0 || i >= kfac_param_defs_count)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_param_get_info: no parameter %d (0..%d)", i,
                         kfac_param_defs_count - 1);
    const kfac_param_def *d = &kfac_param_defs[i];
    memset(out, 0, sizeof *out);
    out->section = d->section;
    out->key = d->key;
    out->flag = d->flag;
    out->resets = d->resets;
    out->arg = d->v.type == KFAC_V_ENUM ? "NAME" : d->v.type == KFAC_V_FLOAT ? "X" : "N";
    out->doc = d->doc;
    kfac_value_range(&d->v, out->range, sizeof out->range);
    kfac_train_params defaults;
    kfac_train_params_init(&defaults);
    kfac_param_slot slot = {d, kfac_param_field(d, &defaults), 0, ""};
    format_value(&slot, 0, out->def, sizeof out->def);
    return KFAC_OK;
}

/* ------------------------------------------------------------ enum names */

/* Name tables of the K-FAC enums, shared by the net-file parser, the
 * command line and messages. */
static const char *const fisher_names[KFAC_FISHER_COUNT] = {"sampled", "empirical"};
static const char *const inversion_names[KFAC_INV_COUNT] = {"cholesky", "eigen", "lowrank", "ekfac", "tridiag"};
static const char *const rule_names[KFAC_RULE_COUNT] = {"kl_clip", "quadratic"};
static const char *const lr_schedule_names[KFAC_LR_COUNT] = {"constant", "step", "cosine"};

KFAC_NAMED_ENUM(kfac_fisher_kind, kfac_fisher, fisher_names[k], KFAC_FISHER_COUNT, "Fisher kind")
KFAC_NAMED_ENUM(kfac_inversion, kfac_inversion, inversion_names[k], KFAC_INV_COUNT, "inversion")
KFAC_NAMED_ENUM(kfac_step_rule, kfac_step_rule, rule_names[k], KFAC_RULE_COUNT, "step rule")
KFAC_NAMED_ENUM(kfac_lr_schedule, kfac_lr_schedule, lr_schedule_names[k], KFAC_LR_COUNT, "lr schedule")
