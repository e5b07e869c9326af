/* csv.c - reader of CSV data sets (gzipped or plain): numeric features and
 * one integer label column per row, with or without a header row; every
 * malformed row is a status with "<path>:<line>: problem". */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "zread.h"

/* Limits that refuse absurd files before anything large is allocated. */
#define CSV_MAX_FEATURES 1000000
#define CSV_MAX_VALUES (1ull << 29) /* 2 GB of floats */
#define CSV_MAX_TEXT (1ull << 33)

/* The whole file, NUL-terminated, into *out (malloc'ed). */
static kfac_status read_text(const char *path, char **out, size_t *len)
{
    kfac_zread z;
    kfac_status st = kfac_zread_open(&z, path);
    if (st != KFAC_OK)
        return st;
    size_t have = 0, cap = 1 << 16;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            st = kfac_fail(KFAC_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, cap + 1);
            break;
        }
        size_t got;
        if ((st = kfac_zread_read(&z, buf + have, cap - have, &got)) != KFAC_OK)
            break;
        have += got;
        if (have < cap) { /* the end */
            if (z.cut)
                st = kfac_fail(KFAC_ERR_FORMAT, "%s: gzip stream ends early (after %zu byte%s of text)", path, have,
                               KFAC_S(have));
            break;
        }
        if (cap >= CSV_MAX_TEXT) {
            st = kfac_fail(KFAC_ERR_FORMAT, "%s: more than %llu bytes of text", path, (unsigned long long)CSV_MAX_TEXT);
            break;
        }
        char *more = realloc(buf, 2 * cap + 1);
        if (!more)
            free(buf);
        buf = more;
        cap *= 2;
    }
    kfac_zread_close(&z);
    if (st != KFAC_OK) {
        free(buf);
        return st;
    }
    buf[have] = '\0';
    *out = buf;
    *len = have;
    return KFAC_OK;
}

/* s without the spaces and tabs around it (in place) */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Split the NUL-terminated line at its commas (in place): up to max
 * trimmed fields into f; returns how many the line has. */
static int split(char *line, char **f, int max)
{
    int n = 0;
    for (char *p = line;; n++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (n < max)
            f[n] = trim(p);
        if (!comma)
            return n + 1;
        p = comma + 1;
    }
}

/* A finite number, the whole field. */
static int parse_number(const char *s, double *v)
{
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return end != s && *end == '\0' && isfinite(*v);
}

/* The next line of text from *p: NUL-terminated in place (without "\r\n"),
 * *p moved past it; NULL at the end. */
static char *next_line(char **p, char *end)
{
    if (*p >= end)
        return NULL;
    char *line = *p, *nl = memchr(line, '\n', (size_t)(end - line));
    char *stop = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    *stop = '\0';
    if (stop > line && stop[-1] == '\r')
        stop[-1] = '\0';
    return line;
}

static int blank(const char *s) { return s[strspn(s, " \t")] == '\0'; }

kfac_status kfac_csv_load(const char *path, int classes, int label_column, kfac_dataset *out)
{
    kfac_clear_error();
    if (!path || !out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_csv_load: NULL argument");
    if (classes < 0 || classes > KFAC_MAX_CLASSES)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_csv_load: classes %d outside [0, %d]", classes,
                         KFAC_MAX_CLASSES);
    if (label_column < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_csv_load: label_column %d is not 1 or more", label_column);
    char *text = NULL, **f = NULL;
    size_t len = 0;
    float *x = NULL;
    uint8_t *labels = NULL;
    kfac_status st = read_text(path, &text, &len);
    if (st != KFAC_OK)
        return st;
    char *end = text + len, *p = text, *line;
    if (memchr(text, '\0', len)) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: not a text file (a NUL byte)", path);
        goto done;
    }
    size_t lines = 1;
    for (char *c = text; (c = memchr(c, '\n', (size_t)(end - c))) != NULL; c++)
        lines++;

    /* the first row that is not blank: a header, or the first example */
    int lineno = 0, first_line = 0, fields = 0, header = 0;
    while ((line = next_line(&p, end)) != NULL) {
        lineno++;
        if (!blank(line))
            break;
    }
    if (!line) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: empty file", path);
        goto done;
    }
    first_line = lineno;
    /* count the fields on a copy (split writes into the line) */
    fields = 1;
    for (const char *c = line; *c; c++)
        fields += *c == ',';
    if (fields > CSV_MAX_FEATURES + 1) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s:%d: %d fields, more than %d features", path, lineno, fields,
                       CSV_MAX_FEATURES);
        goto done;
    }
    if (fields < 2) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s:%d: 1 field; a row needs features and a label", path, lineno);
        goto done;
    }
    if (label_column > fields) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s:%d: label_column %d, but the row has %d fields", path, lineno,
                       label_column, fields);
        goto done;
    }
    int features = fields - 1, bound = classes ? classes : KFAC_MAX_CLASSES, top = 0;
    if ((unsigned long long)lines * (unsigned long long)features > CSV_MAX_VALUES) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: %zu lines of %d features: more than %llu values", path, lines, features,
                       (unsigned long long)CSV_MAX_VALUES);
        goto done;
    }
    f = malloc(sizeof *f * (size_t)fields);
    x = kfac_alloc_floats(lines * (size_t)features);
    labels = malloc(lines);
    if (!f || !x || !labels) {
        st = kfac_fail(KFAC_ERR_NOMEM, "%s: cannot allocate %zu rows of %d features", path, lines, features);
        goto done;
    }
    size_t n = 0;
    for (int row = 0; line; line = next_line(&p, end), lineno++, row++) {
        if (row > 0 && blank(line))
            continue;
        int got = split(line, f, fields);
        if (got != fields) {
            st = kfac_fail(KFAC_ERR_FORMAT, "%s:%d: %d field%s, expected %d (as line %d)", path, lineno, got,
                           KFAC_S(got), fields, first_line);
            goto done;
        }
        float *xr = x + n * (size_t)features;
        int bad = -1;
        for (int c = 0, k = 0; c < fields && bad < 0; c++) {
            double v;
            if (c == label_column - 1)
                continue;
            if (parse_number(f[c], &v))
                xr[k++] = (float)v;
            else
                bad = c;
        }
        if (row == 0 && bad < 0) { /* the first row: a header unless the label parses too */
            double v;
            header = !parse_number(f[label_column - 1], &v);
        } else if (row == 0) {
            header = 1;
        }
        if (row == 0 && header)
            continue;
        if (bad >= 0) {
            st = kfac_fail(KFAC_ERR_FORMAT, "%s:%d: field %d, '%.40s', is not a number", path, lineno, bad + 1,
                           f[bad]);
            goto done;
        }
        const char *ls = f[label_column - 1];
        char *lend;
        errno = 0;
        long lab = strtol(ls, &lend, 10);
        if (lend == ls || *lend != '\0' || errno == ERANGE) {
            st = kfac_fail(KFAC_ERR_FORMAT, "%s:%d: label (field %d) '%.40s' is not an integer", path, lineno,
                           label_column, ls);
            goto done;
        }
        if (lab < 0 || lab >= bound) {
            st = kfac_fail(KFAC_ERR_FORMAT, "%s:%d: label %ld at index %zu outside [0, %d)", path, lineno, lab, n,
                           bound);
            goto done;
        }
        labels[n++] = (uint8_t)lab;
        top = KFAC_MAX(top, (int)lab + 1);
    }
    if (n == 0) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: no data rows after the header (line %d)", path, first_line);
        goto done;
    }
    if (n > 100000000u) {
        st = kfac_fail(KFAC_ERR_FORMAT, "%s: %zu rows, more than 100000000", path, n);
        goto done;
    }
    out->n = (int)n;
    out->features = features;
    out->rows = 1;
    out->cols = features;
    out->classes = classes ? classes : top;
    out->x = x;
    out->labels = labels;
    x = NULL;
    labels = NULL;
done:
    free(text);
    free(f);
    kfac_free_floats(x);
    free(labels);
    return st;
}
