/* test_csv.c - the CSV reader on small files the tests write (with and
 * without a header, any label column, gzipped, and every kind of
 * malformed row), and kfac_data_load's choice of files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "kfac.h"
#include "tests.h"

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", test_tmpdir(), name);
}

static void write_text(const char *path, const char *text, int gz)
{
    if (gz) {
        gzFile g = gzopen(path, "wb");
        ck_assert_ptr_nonnull(g);
        if (*text)
            ck_assert_int_eq(gzwrite(g, text, (unsigned)strlen(text)), (int)strlen(text));
        ck_assert_int_eq(gzclose(g), Z_OK);
        return;
    }
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static const float want_x[3][3] = {{0.5f, -1.0f, 2.0f}, {1e-3f, 3.0f, 4.5f}, {0.0f, 0.0f, 7.0f}};
static const int want_lab[3] = {2, 0, 1};

static void assert_small(const kfac_dataset *d)
{
    ck_assert_int_eq(d->n, 3);
    ck_assert_int_eq(d->features, 3);
    ck_assert_int_eq(d->rows, 1);
    ck_assert_int_eq(d->cols, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(d->labels[i], (unsigned)want_lab[i]);
        for (int j = 0; j < 3; j++)
            ck_assert_msg(d->x[i * 3 + j] == want_x[i][j], "x[%d][%d] = %g, want %g", i, j, d->x[i * 3 + j],
                          want_x[i][j]);
    }
}

/* The same three rows written several ways load alike. */
START_TEST(test_csv_good)
{
    static const struct {
        const char *text;
        int label_column, gz;
    } cases[] = {
        /* a header, the label last */
        {"a,b,c,label\n0.5,-1,2,2\n0.001,3,4.5,0\n0,0,7,1\n", 4, 0},
        /* no header, the label first, CRLF, spaces, blank lines, no final newline */
        {"2, 0.5 ,-1,2\r\n\r\n0 ,1e-3,3,4.5\r\n\n1,0,0,7", 1, 0},
        /* the label in the middle, a quoted header, gzipped */
        {"\"x\",\"y\",\"class\",\"z\"\n0.5,-1,2,2\n1e-3,3,0,4.5\n0,0,1,7\n", 3, 1},
    };
    for (int k = 0; k < 3; k++) {
        char path[512], name[32];
        snprintf(name, sizeof name, "good-%d.csv%s", k, cases[k].gz ? ".gz" : "");
        tmp_path(path, sizeof path, name);
        write_text(path, cases[k].text, cases[k].gz);
        kfac_dataset d;
        kfac_status st = kfac_csv_load(path, 3, cases[k].label_column, &d);
        ck_assert_msg(st == KFAC_OK, "case %d: %s", k, kfac_last_error());
        ck_assert_int_eq(d.classes, 3);
        assert_small(&d);
        kfac_dataset_free(&d);
        /* classes 0: the largest label plus one */
        ck_assert_int_eq(kfac_csv_load(path, 0, cases[k].label_column, &d), KFAC_OK);
        ck_assert_int_eq(d.classes, 3);
        kfac_dataset_free(&d);
    }
}
END_TEST

/* Every malformed kind: status KFAC_ERR_FORMAT, "path:line: problem" (or
 * "path: problem" for the whole file), *out untouched. */
START_TEST(test_csv_bad)
{
    static const struct {
        const char *text;
        int classes, label_column;
        const char *where, *problem;
    } cases[] = {
        {"", 3, 1, ": ", "empty file"},
        {"\n  \n\n", 3, 1, ": ", "empty file"},
        {"a,b,label\n", 3, 3, ": ", "no data rows after the header (line 1)"},
        {"1,2,0\n3,4,1\n5,6\n", 3, 3, ":3: ", "2 fields, expected 3 (as line 1)"},
        {"a,b,label\n1,2,0\n3,4,1,9\n", 3, 3, ":3: ", "4 fields, expected 3 (as line 1)"},
        {"a,b,label\n1,2,0\n3,x4,1\n", 3, 3, ":3: ", "field 2, 'x4', is not a number"},
        {"1,2,0\n3,,1\n", 3, 3, ":2: ", "field 2, '', is not a number"},
        {"1,2,0\n3,nan,1\n", 3, 3, ":2: ", "field 2, 'nan', is not a number"},
        {"1,2,0\n3,4,1.5\n", 3, 3, ":2: ", "label (field 3) '1.5' is not an integer"},
        {"1,2,0\n3,4,one\n", 3, 3, ":2: ", "label (field 3) 'one' is not an integer"},
        {"h1,h2,h3\n1,2,0\n3,4,1\n5,6,3\n", 3, 3, ":4: ", "label 3 at index 2 outside [0, 3)"},
        {"1,2,0\n3,4,-1\n", 3, 3, ":2: ", "label -1 at index 1 outside [0, 3)"},
        {"1,2,0\n3,4,300\n", 0, 3, ":2: ", "label 300 at index 1 outside [0, 256)"},
        {"1,2,0\n", 3, 4, ":1: ", "label_column 4, but the row has 3 fields"},
        {"label\n0\n", 3, 1, ":1: ", "1 field; a row needs features and a label"},
    };
    int k = _i;
    char path[512], name[32], want[600];
    snprintf(name, sizeof name, "bad-%d.csv", k);
    tmp_path(path, sizeof path, name);
    write_text(path, cases[k].text, 0);
    kfac_dataset d, before;
    memset(&d, 0xA5, sizeof d);
    memcpy(&before, &d, sizeof d);
    kfac_status st = kfac_csv_load(path, cases[k].classes, cases[k].label_column, &d);
    const char *msg = kfac_last_error();
    ck_assert_msg(st == KFAC_ERR_FORMAT, "case %d: status %s (%s)", k, kfac_strerror(st), msg);
    snprintf(want, sizeof want, "%s%s%s", path, cases[k].where, cases[k].problem);
    ck_assert_msg(strcmp(msg, want) == 0, "case %d: '%s', expected '%s'", k, msg, want);
    ck_assert(memcmp(&d, &before, sizeof d) == 0);
}
END_TEST

/* A gzipped CSV file cut short loaded the rows before the cut as the
 * whole file, and bytes after its gzip stream were dropped without a
 * word (zlib's gzread); both are refused naming the file. Two members
 * one after the other are one file's text. */
START_TEST(test_csv_gzip_damage)
{
    const char *text = "a,b,c,label\n0.5,-1,2,2\n0.001,3,4.5,0\n0,0,7,1\n";
    char path[512], bad[512];
    tmp_path(path, sizeof path, "gzdamage.csv.gz");
    write_text(path, text, 1);
    static unsigned char raw[4096], buf[4200];
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t len = fread(raw, 1, sizeof raw, f);
    fclose(f);
    for (int c = 0; c < 3; c++) {
        size_t n = len;
        memcpy(buf, raw, len);
        if (c == 0)
            n -= 12; /* the crc and length, and the end of the deflate data */
        else if (c == 1)
            memcpy(buf + len, "9,9,9,1\n", 8), n += 8; /* a row, not compressed */
        else { /* a second member */
            char part[512];
            tmp_path(part, sizeof part, "gzdamage-part.gz");
            write_text(part, "1,1,1,1\n", 1);
            f = fopen(part, "rb");
            ck_assert_ptr_nonnull(f);
            n += fread(buf + len, 1, sizeof buf - len, f);
            fclose(f);
        }
        snprintf(bad, sizeof bad, "%s/gzdamage-%d.csv.gz", test_tmpdir(), c);
        FILE *o = fopen(bad, "wb");
        ck_assert_ptr_nonnull(o);
        ck_assert_uint_eq(fwrite(buf, 1, n, o), n);
        ck_assert_int_eq(fclose(o), 0);
        kfac_dataset d;
        memset(&d, 0xA5, sizeof d);
        kfac_status st = kfac_csv_load(bad, 0, 4, &d);
        if (c == 2) {
            ck_assert_msg(st == KFAC_OK, "%s", kfac_last_error());
            ck_assert_int_eq(d.n, 4);
            ck_assert(d.x[9] == 1.0f && d.labels[3] == 1);
            kfac_dataset_free(&d);
            continue;
        }
        ck_assert_int_eq(st, KFAC_ERR_FORMAT);
        const char *want = c == 0 ? ": gzip stream ends early" : ": 8 bytes after the end of the gzip stream (not gzip)";
        const char *msg = kfac_last_error();
        ck_assert_msg(strstr(msg, bad) == msg && strstr(msg, want), "case %d: %s", c, msg);
        ck_assert_int_eq(d.n, (int)0xA5A5A5A5);
    }
}
END_TEST

START_TEST(test_csv_args)
{
    char path[512];
    tmp_path(path, sizeof path, "args.csv");
    write_text(path, "1,0\n", 0);
    kfac_dataset d;
    ck_assert_int_eq(kfac_csv_load(NULL, 3, 1, &d), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_csv_load(path, 3, 0, &d), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_csv_load(path, 257, 1, &d), KFAC_ERR_INVALID_ARG);
    tmp_path(path, sizeof path, "no-such.csv");
    ck_assert_int_eq(kfac_csv_load(path, 3, 1, &d), KFAC_ERR_IO);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), path));
}
END_TEST

/* kfac_data_load: a directory's train.csv and test.csv (before IDX files),
 * one file whatever the set, a directory missing one of its CSV files. */
START_TEST(test_data_load)
{
    char dir[512], path[600];
    tmp_path(dir, sizeof dir, "csvdir");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    snprintf(path, sizeof path, "%s/train.csv", dir);
    write_text(path, "f1,f2,f3,y\n0.5,-1,2,2\n0.001,3,4.5,0\n0,0,7,1\n", 0);
    kfac_dataset d;
    ck_assert_msg(kfac_data_load(dir, "train", 3, 4, &d) == KFAC_OK, "%s", kfac_last_error());
    assert_small(&d);
    kfac_dataset_free(&d);
    /* the file itself, as "train" or "test" */
    ck_assert_int_eq(kfac_data_load(path, "t10k", 3, 4, &d), KFAC_OK);
    assert_small(&d);
    kfac_dataset_free(&d);
    /* no test.csv beside train.csv: named */
    ck_assert_int_eq(kfac_data_load(dir, "test", 3, 4, &d), KFAC_ERR_IO);
    snprintf(path, sizeof path, "%s/test.csv", dir);
    ck_assert_msg(strstr(kfac_last_error(), path) != NULL, "%s", kfac_last_error());
    write_text(path, "9,9,9,1\n", 0);
    ck_assert_int_eq(kfac_data_load(dir, "test", 3, 4, &d), KFAC_OK);
    ck_assert_int_eq(d.n, 1);
    ck_assert_uint_eq(d.labels[0], 1);
    kfac_dataset_free(&d);
    /* a label past the network's classes names the file, line and index */
    ck_assert_int_eq(kfac_data_load(dir, "train", 2, 4, &d), KFAC_ERR_FORMAT);
    ck_assert_msg(strstr(kfac_last_error(), "train.csv:2: label 2 at index 0 outside [0, 2)") != NULL, "%s",
                  kfac_last_error());
    ck_assert_int_eq(kfac_data_load(dir, "valid", 3, 4, &d), KFAC_ERR_INVALID_ARG);
    tmp_path(path, sizeof path, "csvdir-nowhere");
    ck_assert_int_eq(kfac_data_load(path, "train", 3, 4, &d), KFAC_ERR_IO);
}
END_TEST

Suite *csv_suite(void)
{
    Suite *s = suite_create("csv");
    TCase *tc = tcase_create("csv");
    tcase_add_test(tc, test_csv_good);
    tcase_add_loop_test(tc, test_csv_bad, 0, 15);
    tcase_add_test(tc, test_csv_gzip_damage);
    tcase_add_test(tc, test_csv_args);
    tcase_add_test(tc, test_data_load);
    suite_add_tcase(s, tc);
    return s;
}
