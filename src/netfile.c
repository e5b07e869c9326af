/* netfile.c - reads the INI-like net files ([net], [dense], [train], [kfac]) into a
 * kfac_net_spec and kfac_train_params. Every key is one row of a table, so
 * a new section is a row in `sections` plus its rows in `keys`. */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Bigger than any sane net file; stops a wrong path (a data set, /dev/zero)
 * from being read whole. */
#define NETFILE_MAX_BYTES (1L << 20)

/* ------------------------------------------------------------- enums */

/* An enum as the table sees it: set a field from a name, and list the names
 * for error messages. The adapters keep the real enum types, so no function
 * pointer is called through a mismatched type. */
typedef struct enum_def {
    const char *what; /* "activation", ... for messages */
    int count;
    kfac_status (*from_name)(const char *name, void *field);
    const char *(*name)(int i);
} enum_def;

#define ENUM_DEF(var, what, type, prefix, count)                                              \
    static kfac_status var##_from_name(const char *s, void *field)                            \
    {                                                                                         \
        return prefix##_from_name(s, (type *)field);                                          \
    }                                                                                         \
    static const char *var##_name(int i) { return prefix##_name((type)i); }                   \
    static const enum_def var = {what, count, var##_from_name, var##_name};

ENUM_DEF(act_enum, "activation", kfac_activation, kfac_activation, KFAC_ACT_COUNT)
ENUM_DEF(loss_enum, "loss", kfac_loss, kfac_loss, KFAC_LOSS_COUNT)
ENUM_DEF(init_enum, "init", kfac_init, kfac_init, KFAC_INIT_COUNT)
ENUM_DEF(opt_enum, "optimizer", kfac_optimizer_kind, kfac_optimizer, KFAC_OPT_COUNT)
ENUM_DEF(fisher_enum, "fisher", kfac_fisher_kind, kfac_fisher, KFAC_FISHER_COUNT)
ENUM_DEF(inversion_enum, "inversion", kfac_inversion, kfac_inversion, KFAC_INV_COUNT)
ENUM_DEF(rule_enum, "rule", kfac_step_rule, kfac_step_rule, KFAC_RULE_COUNT)

/* ---------------------------------------------------------- sections */

typedef struct parser parser;

enum { SEC_NET, SEC_DENSE, SEC_TRAIN, SEC_KFAC, SEC_COUNT };

typedef struct section_def {
    const char *name;
    int min_count, max_count; /* occurrences allowed in a file */
    /* Called at the header of the index-th (0-based) occurrence; returns the
     * struct that this occurrence's keys fill. */
    void *(*enter)(parser *p, int index);
} section_def;

struct parser {
    const char *file;
    kfac_net_spec *spec;
    kfac_train_params *train;
};

static void *enter_net(parser *p, int index)
{
    (void)index;
    return p->spec;
}

static void *enter_dense(parser *p, int index)
{
    p->spec->n_layers = index + 1;
    return &p->spec->layers[index];
}

static void *enter_train(parser *p, int index)
{
    (void)index;
    return p->train;
}

static void *enter_kfac(parser *p, int index)
{
    (void)index;
    return &p->train->kfac;
}

/* A new section (the coming [kfac]) is an id in the enum above, a row here
 * whose enter() returns its target struct (add a pointer to `parser`), and
 * its key rows below. */
static const section_def sections[SEC_COUNT] = {
    [SEC_NET] = {"net", 1, 1, enter_net},
    [SEC_DENSE] = {"dense", 1, KFAC_MAX_LAYERS, enter_dense},
    [SEC_TRAIN] = {"train", 0, 1, enter_train},
    [SEC_KFAC] = {"kfac", 0, 1, enter_kfac},
};

/* -------------------------------------------------------------- keys */

typedef enum value_type {
    T_INT,   /* int field, range [min, max] */
    T_FLOAT, /* float field, range per `bounds` */
    T_U64,   /* uint64_t field, any value (min/max unused) */
    T_ENUM,  /* enum field, named by `en` */
} value_type;

/* Which ends of [min, max] are excluded. */
enum { CLOSED = 0, OPEN_LO = 1, OPEN_HI = 2 };

typedef struct key_def {
    int section;
    const char *key;
    value_type type;
    size_t offset; /* into the struct returned by the section's enter() */
    double min, max;
    int bounds;
    int required;
    const enum_def *en;
} key_def;

#define NET(f) offsetof(kfac_net_spec, f)
#define LAYER(f) offsetof(kfac_layer_spec, f)
#define TRAIN(f) offsetof(kfac_train_params, f)
#define KFAC(f) offsetof(kfac_kfac_params, f)

/* Ranges mirror the documented ones in kfac.h, so a value is rejected with
 * its line rather than later by a *_validate without one. */
static const key_def keys[] = {
    /* section  key             type     offset                     min/max              req enum */
    {SEC_NET,   "inputs",       T_INT,   NET(inputs),               1, 10000000, CLOSED,  1, NULL},
    {SEC_NET,   "loss",         T_ENUM,  NET(loss),                 0, 0,        CLOSED,  0, &loss_enum},
    {SEC_NET,   "init",         T_ENUM,  NET(init),                 0, 0,        CLOSED,  0, &init_enum},
    {SEC_NET,   "init_sigma",   T_FLOAT, NET(init_sigma),           0, 100,      OPEN_LO, 0, NULL},
    {SEC_NET,   "sparse_count", T_INT,   NET(sparse_count),         1, 100000,   CLOSED,  0, NULL},
    {SEC_NET,   "pool",         T_INT,   NET(input_pool),           1, 64,       CLOSED,  0, NULL},

    {SEC_DENSE, "units",        T_INT,   LAYER(units),              1, 1000000,  CLOSED,  1, NULL},
    {SEC_DENSE, "activation",   T_ENUM,  LAYER(activation),         0, 0,        CLOSED,  0, &act_enum},

    {SEC_TRAIN, "optimizer",    T_ENUM,  TRAIN(optimizer),          0, 0,        CLOSED,  0, &opt_enum},
    {SEC_TRAIN, "lr",           T_FLOAT, TRAIN(optim.lr),           0, 1000,     OPEN_LO, 0, NULL},
    {SEC_TRAIN, "momentum",     T_FLOAT, TRAIN(optim.momentum),     0, 1,        OPEN_HI, 0, NULL},
    {SEC_TRAIN, "beta1",        T_FLOAT, TRAIN(optim.beta1),        0, 1,        OPEN_HI, 0, NULL},
    {SEC_TRAIN, "beta2",        T_FLOAT, TRAIN(optim.beta2),        0, 1,        OPEN_HI, 0, NULL},
    {SEC_TRAIN, "eps",          T_FLOAT, TRAIN(optim.eps),          0, 1,        OPEN_LO, 0, NULL},
    {SEC_TRAIN, "weight_decay", T_FLOAT, TRAIN(optim.weight_decay), 0, 1000,     CLOSED,  0, NULL},
    {SEC_TRAIN, "batch",        T_INT,   TRAIN(batch),              1, 1000000,  CLOSED,  0, NULL},
    {SEC_TRAIN, "epochs",       T_INT,   TRAIN(epochs),             1, 100000,   CLOSED,  0, NULL},
    {SEC_TRAIN, "seed",         T_U64,   TRAIN(seed),               0, 0,        CLOSED,  0, NULL},

    {SEC_KFAC,  "damping",      T_FLOAT, KFAC(damping),             0, 1e6,      OPEN_LO, 0, NULL},
    {SEC_KFAC,  "decay",        T_FLOAT, KFAC(decay),               0, 1,        OPEN_HI, 0, NULL},
    {SEC_KFAC,  "cov_every",    T_INT,   KFAC(cov_every),           1, 1000000,  CLOSED,  0, NULL},
    {SEC_KFAC,  "inv_every",    T_INT,   KFAC(inv_every),           1, 1000000,  CLOSED,  0, NULL},
    {SEC_KFAC,  "stat_fraction", T_FLOAT, KFAC(stat_fraction),      0, 1,        OPEN_LO, 0, NULL},
    {SEC_KFAC,  "fisher",       T_ENUM,  KFAC(fisher),              0, 0,        CLOSED,  0, &fisher_enum},
    {SEC_KFAC,  "inversion",    T_ENUM,  KFAC(inversion),           0, 0,        CLOSED,  0, &inversion_enum},
    {SEC_KFAC,  "rule",         T_ENUM,  KFAC(rule),                0, 0,        CLOSED,  0, &rule_enum},
    {SEC_KFAC,  "kl_clip",      T_FLOAT, KFAC(kl_clip),             0, 1e6,      OPEN_LO, 0, NULL},
    {SEC_KFAC,  "lm_every",     T_INT,   KFAC(lm_every),            1, 1000000,  CLOSED,  0, NULL},
    {SEC_KFAC,  "lr",           T_FLOAT, KFAC(lr),                  0, 1000,     CLOSED,  0, NULL},
    {SEC_KFAC,  "momentum",     T_FLOAT, KFAC(momentum),            -1, 1,       OPEN_HI, 0, NULL},
    {SEC_KFAC,  "rank_max",     T_INT,   KFAC(rank_max),            1, 4096,     CLOSED,  0, NULL},
    {SEC_KFAC,  "fvp_fraction", T_FLOAT, KFAC(fvp_fraction),        0, 1,        OPEN_LO, 0, NULL},
};

#define N_KEYS (sizeof keys / sizeof *keys)

/* ----------------------------------------------------------- helpers */

/* also drops the '\r' of CRLF files */
static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* "a, b, c" lists for messages: a section's keys, the sections, an enum's names */
static const char *key_list(int section, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < N_KEYS; k++)
        if (keys[k].section == section && n < size)
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", keys[k].key);
    return buf;
}

static const char *section_list(char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int s = 0; s < SEC_COUNT && n < size; s++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", sections[s].name);
    return buf;
}

static const char *enum_list(const enum_def *en, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < en->count && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", en->name(i));
    return buf;
}

static kfac_status out_of_range(const parser *p, int line, const key_def *k, const char *value)
{
    return kfac_fail(KFAC_ERR_PARSE, "%s:%d: %s = %s is outside %c%.10g, %.10g%c", p->file, line,
                     k->key, value, (k->bounds & OPEN_LO) ? '(' : '[', k->min, k->max,
                     (k->bounds & OPEN_HI) ? ')' : ']');
}

/* Convert `value` as row k says and store it in base + k->offset. */
static kfac_status set_value(const parser *p, int line, const key_def *k, const char *value,
                             void *base)
{
    void *field = (char *)base + k->offset;
    char *end;
    errno = 0;
    switch (k->type) {
    case T_INT: {
        long v = strtol(value, &end, 10);
        if (end == value || *end != '\0')
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: %s needs an integer, got '%s'", p->file,
                             line, k->key, value);
        if (errno == ERANGE || v < k->min || v > k->max)
            return out_of_range(p, line, k, value);
        *(int *)field = (int)v;
        return KFAC_OK;
    }
    case T_FLOAT: {
        double d = strtod(value, &end);
        if (end == value || *end != '\0')
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: %s needs a number, got '%s'", p->file, line,
                             k->key, value);
        /* check the float that is stored (0.999999999 rounds to 1); the
         * negated comparisons also reject NaN */
        double f = (float)d;
        if (!(f >= k->min && f <= k->max) || ((k->bounds & OPEN_LO) && f == k->min) ||
            ((k->bounds & OPEN_HI) && f == k->max))
            return out_of_range(p, line, k, value);
        *(float *)field = (float)f;
        return KFAC_OK;
    }
    case T_U64: {
        /* strtoull would quietly wrap "-1" to 2^64-1 */
        unsigned long long v = strtoull(value, &end, 10);
        if (end == value || *end != '\0' || value[0] == '-' || value[0] == '+')
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: %s needs a non-negative integer, got '%s'",
                             p->file, line, k->key, value);
        if (errno == ERANGE)
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: %s = %s is larger than 2^64-1", p->file,
                             line, k->key, value);
        *(uint64_t *)field = (uint64_t)v;
        return KFAC_OK;
    }
    case T_ENUM:
        if (k->en->from_name(value, field) != KFAC_OK) {
            char names[256];
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: unknown %s '%s' (%s)", p->file, line,
                             k->en->what, value, enum_list(k->en, names, sizeof names));
        }
        return KFAC_OK;
    }
    return kfac_fail(KFAC_ERR_PARSE, "%s:%d: %s has no value type", p->file, line, k->key);
}

/* The section that ends here must have had its required keys. */
static kfac_status close_section(const parser *p, int section, int header_line,
                                 const int *seen_line)
{
    if (section < 0)
        return KFAC_OK;
    for (size_t k = 0; k < N_KEYS; k++)
        if (keys[k].section == section && keys[k].required && !seen_line[k])
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: [%s] without %s", p->file, header_line,
                             sections[section].name, keys[k].key);
    return KFAC_OK;
}

/* Parse `text` in place (it is a private copy): NUL-terminates lines. */
static kfac_status parse_lines(parser *p, char *text)
{
    int count[SEC_COUNT] = {0};
    int first_line[SEC_COUNT] = {0};
    int seen_line[N_KEYS] = {0}; /* line of each key in the current section, 0 = not yet */
    int section = -1, header_line = 0;
    void *target = NULL;
    char list[256];
    kfac_status st;

    int line = 0;
    for (char *next = text; next;) {
        char *s = next;
        line++;
        next = strchr(s, '\n');
        if (next)
            *next++ = '\0';
        s[strcspn(s, "#;")] = '\0';
        s = trim(s);
        if (*s == '\0')
            continue;

        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1] != '\0')
                return kfac_fail(KFAC_ERR_PARSE, "%s:%d: malformed section header '%s'", p->file,
                                 line, s);
            *close = '\0';
            char *name = trim(s + 1);
            int sec = 0;
            while (sec < SEC_COUNT && strcmp(name, sections[sec].name) != 0)
                sec++;
            if (sec == SEC_COUNT)
                return kfac_fail(KFAC_ERR_PARSE, "%s:%d: unknown section [%s] (%s)", p->file,
                                 line, name, section_list(list, sizeof list));
            if ((st = close_section(p, section, header_line, seen_line)) != KFAC_OK)
                return st;
            if (count[sec] == sections[sec].max_count) {
                if (sections[sec].max_count == 1)
                    return kfac_fail(KFAC_ERR_PARSE,
                                     "%s:%d: second [%s] section (first at line %d)", p->file,
                                     line, name, first_line[sec]);
                return kfac_fail(KFAC_ERR_PARSE, "%s:%d: more than %d [%s] sections", p->file,
                                 line, sections[sec].max_count, name);
            }
            if (count[sec] == 0)
                first_line[sec] = line;
            target = sections[sec].enter(p, count[sec]++);
            section = sec;
            header_line = line;
            memset(seen_line, 0, sizeof seen_line);
            continue;
        }

        char *eq = strchr(s, '=');
        if (!eq)
            return kfac_fail(KFAC_ERR_PARSE,
                             "%s:%d: expected 'key = value' or '[section]', got '%s'", p->file,
                             line, s);
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (*key == '\0')
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: missing key before '='", p->file, line);
        if (section < 0)
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: key '%s' before any section", p->file, line,
                             key);
        size_t k = 0;
        while (k < N_KEYS && !(keys[k].section == section && strcmp(keys[k].key, key) == 0))
            k++;
        if (k == N_KEYS)
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: unknown key '%s' in [%s] (%s)", p->file, line,
                             key, sections[section].name, key_list(section, list, sizeof list));
        if (seen_line[k])
            return kfac_fail(KFAC_ERR_PARSE,
                             "%s:%d: duplicated key '%s' in [%s] (first at line %d)", p->file,
                             line, key, sections[section].name, seen_line[k]);
        if (*value == '\0')
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: empty value for '%s'", p->file, line, key);
        if ((st = set_value(p, line, &keys[k], value, target)) != KFAC_OK)
            return st;
        seen_line[k] = line;
    }

    if ((st = close_section(p, section, header_line, seen_line)) != KFAC_OK)
        return st;
    for (int sec = 0; sec < SEC_COUNT; sec++)
        if (count[sec] < sections[sec].min_count)
            return kfac_fail(KFAC_ERR_PARSE, "%s: no [%s] section", p->file, sections[sec].name);
    return KFAC_OK;
}

/* Re-issue the detail of a failed *_validate as a whole-file parse error. */
static kfac_status fail_whole_file(const char *file)
{
    char detail[512];
    snprintf(detail, sizeof detail, "%s", kfac_last_error());
    return kfac_fail(KFAC_ERR_PARSE, "%s: %s", file, detail);
}

kfac_status kfac_netfile_parse(const char *text, const char *filename, kfac_net_spec *spec,
                               kfac_train_params *train)
{
    kfac_clear_error();
    if (!text || !spec || !train)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_netfile_parse: text, spec or train is NULL");
    if (!filename)
        filename = "<string>";
    kfac_net_spec_init(spec);
    kfac_train_params_init(train);

    /* a private copy lets the parser cut lines and values in place */
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (!copy)
        return kfac_fail(KFAC_ERR_NOMEM, "%s: cannot copy %zu bytes", filename, len + 1);
    memcpy(copy, text, len + 1);

    parser p = {filename, spec, train};
    kfac_status st = parse_lines(&p, copy);
    free(copy);
    if (st != KFAC_OK)
        return st;
    /* cross-field rules (a softmax loss needs a linear last layer, ...) */
    if (kfac_net_spec_validate(spec) != KFAC_OK || kfac_train_params_validate(train) != KFAC_OK)
        return fail_whole_file(filename);
    return KFAC_OK;
}

kfac_status kfac_netfile_load(const char *path, kfac_net_spec *spec, kfac_train_params *train)
{
    kfac_clear_error();
    if (!path || !spec || !train)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_netfile_load: path, spec or train is NULL");
    FILE *f = fopen(path, "rb");
    if (!f)
        return kfac_fail(KFAC_ERR_IO, "%s: %s", path, strerror(errno));

    kfac_status st = KFAC_OK;
    /* one byte more than the limit tells "exactly at the limit" from "over" */
    char *buf = malloc(NETFILE_MAX_BYTES + 2);
    if (!buf) {
        st = kfac_fail(KFAC_ERR_NOMEM, "%s: no memory for the file", path);
        goto done;
    }
    size_t n = fread(buf, 1, NETFILE_MAX_BYTES + 1, f);
    if (ferror(f)) {
        st = kfac_fail(KFAC_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (n > NETFILE_MAX_BYTES) {
        st = kfac_fail(KFAC_ERR_PARSE, "%s: larger than %ld bytes: not a net file", path,
                       NETFILE_MAX_BYTES);
        goto done;
    }
    buf[n] = '\0';
    if (strlen(buf) != n) {
        st = kfac_fail(KFAC_ERR_PARSE, "%s: NUL byte at offset %zu: not a text file", path,
                       strlen(buf));
        goto done;
    }
    st = kfac_netfile_parse(buf, path, spec, train);
done:
    free(buf);
    fclose(f);
    return st;
}
