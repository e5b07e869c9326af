/* netfile.c - reads the INI-like net files ([net], [dense], [train], [kfac])
 * into a kfac_net_spec and kfac_train_params. Every key is one row of a
 * table: the architecture's below, the training parameters' in params.c
 * (which the [train] and [kfac] sections read). */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "net.h"
#include "params.h"

/* Bigger than any sane net file; stops a wrong path (a data set, /dev/zero)
 * from being read whole. */
#define NETFILE_MAX_BYTES (1L << 20)

/* ------------------------------------------------------------- enums */

/* the architecture's enums by index, for the key table */
static const char *act_name(int k) { return kfac_activation_name((kfac_activation)k); }
static const char *loss_name(int k) { return kfac_loss_name((kfac_loss)k); }
static const char *init_name(int k) { return kfac_init_name((kfac_init)k); }

/* ---------------------------------------------------------- sections */

typedef struct parser parser;

enum { SEC_NET, SEC_DENSE, SEC_CONV, SEC_POOL, SEC_TRAIN, SEC_KFAC, SEC_SGD, SEC_MOMENTUM, SEC_NESTEROV, SEC_ADAM, SEC_COUNT };

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
    int layer_line[KFAC_MAX_LAYERS]; /* each layer's section header */
    int line;                        /* the current line */
};

static void *enter_net(parser *p, int index)
{
    (void)index;
    return p->spec;
}

/* The next layer, of `kind`, in the order of the layer sections; NULL
 * past KFAC_MAX_LAYERS. */
static kfac_layer_spec *next_layer(parser *p, kfac_layer_kind kind)
{
    if (p->spec->n_layers == KFAC_MAX_LAYERS)
        return NULL;
    p->layer_line[p->spec->n_layers] = p->line;
    kfac_layer_spec *ls = &p->spec->layers[p->spec->n_layers++];
    ls->kind = kind;
    return ls;
}

static void *enter_dense(parser *p, int index)
{
    (void)index;
    return next_layer(p, KFAC_LAYER_DENSE);
}

static void *enter_conv(parser *p, int index)
{
    (void)index;
    return next_layer(p, KFAC_LAYER_CONV);
}

static void *enter_pool(parser *p, int index)
{
    (void)index;
    kfac_layer_spec *ls = next_layer(p, KFAC_LAYER_MAXPOOL);
    if (ls)
        ls->activation = KFAC_ACT_LINEAR;
    return ls;
}

static void *enter_train(parser *p, int index)
{
    (void)index;
    return p->train;
}

/* A new section is an id in the enum above, a row here whose enter()
 * returns its target struct, and its key rows: the architecture's below,
 * the training parameters' in params.c. [kfac] and the optimizers' own
 * sections ([adam] lr = 0.001) are sections of the training parameters. */
static const section_def sections[SEC_COUNT] = {
    [SEC_NET] = {"net", 1, 1, enter_net},
    [SEC_DENSE] = {"dense", 0, KFAC_MAX_LAYERS, enter_dense},
    [SEC_CONV] = {"conv", 0, KFAC_MAX_LAYERS, enter_conv},
    [SEC_POOL] = {"pool", 0, KFAC_MAX_LAYERS, enter_pool},
    [SEC_TRAIN] = {"train", 0, 1, enter_train},
    [SEC_KFAC] = {"kfac", 0, 1, enter_train},
    [SEC_SGD] = {"sgd", 0, 1, enter_train},
    [SEC_MOMENTUM] = {"momentum", 0, 1, enter_train},
    [SEC_NESTEROV] = {"nesterov", 0, 1, enter_train},
    [SEC_ADAM] = {"adam", 0, 1, enter_train},
};

/* -------------------------------------------------------------- keys */

/* A key of the architecture sections ([net], [dense], [conv], [pool]);
 * [train] and [kfac] take theirs from the parameter table (params.c). */
typedef struct key_def {
    int section;
    const char *key;
    size_t offset; /* into the struct returned by the section's enter() */
    kfac_value_spec v;
    int required;
    /* a value that is not one number (5x3, same, 28x28x1): its own parser,
     * with v only for the range (NULL: kfac_value_parse) */
    kfac_status (*parse)(const struct key_def *k, const char *text, void *field);
} key_def;

/* "a", "axb" or "axbxc" (n = 1..3 numbers wanted, fewer given repeat the
 * last: kernel = 5 is 5x5), each in v's range, into n consecutive ints */
static kfac_status parse_sizes(const struct key_def *k, const char *text, int n, int *out)
{
    int got[3] = {0}, count = 0;
    const char *s = text;
    while (count < n) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < k->v.lo || x > k->v.hi)
            break;
        got[count++] = (int)x;
        if (*end == '\0') {
            for (int i = count; i < n; i++)
                got[i] = got[count - 1];
            memcpy(out, got, sizeof(int) * (size_t)n);
            return KFAC_OK;
        }
        if (*end != 'x' || count == n)
            break;
        s = end + 1;
    }
    return kfac_fail(KFAC_ERR_INVALID_ARG, "%s needs %s of integers in [%g, %g], got '%s'", k->key,
                     n == 2 ? "N or HxW" : "HxWxC", k->v.lo, k->v.hi, text);
}

static kfac_status parse_window(const struct key_def *k, const char *text, void *field)
{
    return parse_sizes(k, text, 2, field); /* kernel_h, kernel_w */
}

static kfac_status parse_square(const struct key_def *k, const char *text, void *field)
{
    int *hw = field; /* pooling: kernel_h, kernel_w, one size */
    kfac_status st = parse_sizes(k, text, 1, hw);
    if (st == KFAC_OK)
        hw[1] = hw[0];
    return st;
}

static kfac_status parse_shape(const struct key_def *k, const char *text, void *field)
{
    int hwc[3];
    if (parse_sizes(k, text, 3, hwc) != KFAC_OK || strchr(text, 'x') == strrchr(text, 'x'))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s needs HxWxC (height x width x channels, as 28x28x1), got '%s'",
                         k->key, text);
    memcpy(field, hwc, sizeof hwc); /* input_h, input_w, input_c */
    return KFAC_OK;
}

static kfac_status parse_pad(const struct key_def *k, const char *text, void *field)
{
    if (strcmp(text, "same") == 0) {
        *(int *)field = KFAC_PAD_SAME;
        return KFAC_OK;
    }
    char *end;
    long x = strtol(text, &end, 10);
    if (end == text || *end != '\0' || x < k->v.lo || x > k->v.hi)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s needs 'same' or an integer in [%g, %g], got '%s'", k->key, k->v.lo,
                         k->v.hi, text);
    *(int *)field = (int)x;
    return KFAC_OK;
}

/* [pool] type: the pooling kinds of kfac_layer_kind */
static const char *pool_name(int k)
{
    return k == KFAC_LAYER_MAXPOOL ? "max" : k == KFAC_LAYER_AVGPOOL ? "avg" : NULL;
}

#define NET(f) offsetof(kfac_net_spec, f)
#define LAYER(f) offsetof(kfac_layer_spec, f)
#define INT(lo, hi) {KFAC_V_INT, lo, hi, KFAC_CLOSED, NULL, NULL, 0}
#define ENUM(what, names, count) {KFAC_V_ENUM, 0, 0, KFAC_CLOSED, what, names, count}
#define WINDOW INT(1, 64)

/* The ranges are kfac_net_spec_validate's, so a value is rejected with
 * its line rather than later without one. */
static const key_def keys[] = {
    /* section  key             offset             value                                   required, own parser */
    {SEC_NET,   "inputs",       NET(inputs),       INT(1, 10000000),                       1, NULL},
    {SEC_NET,   "loss",         NET(loss),         ENUM("loss", loss_name, KFAC_LOSS_COUNT), 0, NULL},
    {SEC_NET,   "init",         NET(init),         ENUM("init", init_name, KFAC_INIT_COUNT), 0, NULL},
    {SEC_NET,   "init_sigma",   NET(init_sigma),   {KFAC_V_FLOAT, 0, 100, KFAC_OPEN_LO, NULL, NULL, 0}, 0, NULL},
    {SEC_NET,   "sparse_count", NET(sparse_count), INT(1, KFAC_SPARSE_COUNT_MAX),          0, NULL},
    {SEC_NET,   "pool",         NET(input_pool),   INT(1, 64),                             0, NULL},
    {SEC_NET,   "shape",        NET(input_h),      INT(1, 10000000),                       0, parse_shape},

    {SEC_DENSE, "units",        LAYER(units),      INT(1, 1000000),                        1, NULL},
    {SEC_DENSE, "activation",   LAYER(activation), ENUM("activation", act_name, KFAC_ACT_COUNT), 0, NULL},

    {SEC_CONV,  "channels",     LAYER(units),      INT(1, 1000000),                        1, NULL},
    {SEC_CONV,  "kernel",       LAYER(kernel_h),   WINDOW,                                 1, parse_window},
    {SEC_CONV,  "stride",       LAYER(stride),     WINDOW,                                 0, NULL},
    {SEC_CONV,  "pad",          LAYER(pad),        INT(0, 63),                             0, parse_pad},
    {SEC_CONV,  "activation",   LAYER(activation), ENUM("activation", act_name, KFAC_ACT_COUNT), 0, NULL},

    {SEC_POOL,  "type",         LAYER(kind),       ENUM("pooling", pool_name, KFAC_LAYER_COUNT), 0, NULL},
    {SEC_POOL,  "size",         LAYER(kernel_h),   WINDOW,                                 1, parse_square},
    {SEC_POOL,  "stride",       LAYER(stride),     WINDOW,                                 0, NULL},
};

#define N_KEYS (sizeof keys / sizeof *keys)

/* A key of any section: row k of `keys`, or N_KEYS + row i of the
 * parameter table. */
static int is_param_section(int section) { return section >= SEC_TRAIN; }

static int find_key(int section, const char *key)
{
    if (is_param_section(section)) {
        kfac_train_params scratch;
        kfac_param_slot s;
        if (kfac_param_slot_find(&scratch, sections[section].name, key, &s) < 0)
            return -1;
        return (int)N_KEYS + (int)(s.d - kfac_param_defs);
    }
    for (size_t k = 0; k < N_KEYS; k++)
        if (keys[k].section == section && strcmp(keys[k].key, key) == 0)
            return (int)k;
    return -1;
}

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

/* "a, b, c" lists for messages: a section's keys, the sections */
static const char *key_list(int section, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < N_KEYS; k++)
        if (keys[k].section == section && n < size)
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", keys[k].key);
    kfac_train_params scratch;
    kfac_param_slot s;
    for (int i = 0; is_param_section(section) && i < kfac_param_defs_count; i++)
        if (kfac_param_slot_find(&scratch, sections[section].name, kfac_param_defs[i].key, &s) == 0 &&
            s.d == &kfac_param_defs[i] && n < size)
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", kfac_param_defs[i].key);
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

/* A [net] key of `spec` from text, checked as a net file's line is
 * (kfac_net_spec_set, for bindings); spec unchanged on failure. */
kfac_status kfac_netfile_set_net_key(kfac_net_spec *spec, const char *key, const char *value)
{
    int k = find_key(SEC_NET, key);
    if (k < 0) {
        char list[256];
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown [net] key '%s' (%s)", key, key_list(SEC_NET, list, sizeof list));
    }
    return keys[k].parse ? keys[k].parse(&keys[k], value, (char *)spec + keys[k].offset)
                         : kfac_value_parse(&keys[k].v, keys[k].key, value, (char *)spec + keys[k].offset);
}

/* Set key k (find_key) of `section` from `value`: an architecture key in
 * target, a parameter in the training parameters. */
static kfac_status set_value(const parser *p, int line, int section, int k, const char *value, void *target)
{
    kfac_status st;
    if (k >= (int)N_KEYS) {
        kfac_param_slot s;
        kfac_param_slot_find(p->train, sections[section].name, kfac_param_defs[k - (int)N_KEYS].key, &s);
        snprintf(s.name, sizeof s.name, "%s", s.d->key); /* the line says which section */
        st = kfac_param_slot_set(&s, value);
    } else if (keys[k].parse) {
        st = keys[k].parse(&keys[k], value, (char *)target + keys[k].offset);
    } else {
        st = kfac_value_parse(&keys[k].v, keys[k].key, value, (char *)target + keys[k].offset);
    }
    if (st == KFAC_OK)
        return st;
    char detail[512];
    snprintf(detail, sizeof detail, "%s", kfac_last_error());
    return kfac_fail(KFAC_ERR_PARSE, "%s:%d: %s", p->file, line, detail);
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
    int seen_line[N_KEYS + KFAC_MAX_PARAMS] = {0}; /* line of each key slot in the current section, 0 = not yet */
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
            p->line = line;
            target = sections[sec].enter(p, count[sec]++);
            if (!target)
                return kfac_fail(KFAC_ERR_PARSE, "%s:%d: more than %d layers ([dense], [conv] and [pool] sections)",
                                 p->file, line, KFAC_MAX_LAYERS);
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
        int k = find_key(section, key);
        if (k < 0)
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: unknown key '%s' in [%s] (%s)", p->file, line,
                             key, sections[section].name, key_list(section, list, sizeof list));
        if (seen_line[k])
            return kfac_fail(KFAC_ERR_PARSE,
                             "%s:%d: duplicated key '%s' in [%s] (first at line %d)", p->file,
                             line, key, sections[section].name, seen_line[k]);
        if (*value == '\0')
            return kfac_fail(KFAC_ERR_PARSE, "%s:%d: empty value for '%s'", p->file, line, key);
        if ((st = set_value(p, line, section, k, value, target)) != KFAC_OK)
            return st;
        seen_line[k] = line;
    }

    if ((st = close_section(p, section, header_line, seen_line)) != KFAC_OK)
        return st;
    for (int sec = 0; sec < SEC_COUNT; sec++)
        if (count[sec] < sections[sec].min_count)
            return kfac_fail(KFAC_ERR_PARSE, "%s: no [%s] section", p->file, sections[sec].name);
    if (p->spec->n_layers == 0)
        return kfac_fail(KFAC_ERR_PARSE, "%s: no layer ([dense], [conv] or [pool] section)", p->file);
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

    /* a UTF-8 byte-order mark (some editors write one) is not text */
    if (!strncmp(text, "\xEF\xBB\xBF", 3))
        text += 3;
    /* a private copy lets the parser cut lines and values in place */
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (!copy)
        return kfac_fail(KFAC_ERR_NOMEM, "%s: cannot copy %zu bytes", filename, len + 1);
    memcpy(copy, text, len + 1);

    parser p = {.file = filename, .spec = spec, .train = train};
    kfac_status st = parse_lines(&p, copy);
    free(copy);
    if (st != KFAC_OK)
        return st;
    /* cross-field rules (a softmax loss needs a linear last layer, a
     * kernel larger than its input, ...), at the layer's section if one
     * is to blame */
    int bad = -1;
    if (kfac_net_spec_check(spec, &bad) != KFAC_OK && bad >= 0) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s", kfac_last_error());
        return kfac_fail(KFAC_ERR_PARSE, "%s:%d: %s", filename, p.layer_line[bad], detail);
    }
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
