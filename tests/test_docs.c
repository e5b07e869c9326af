/* test_docs.c - the repository's references lead somewhere: every
 * "docs/algorithm.md §N" in the code, tests, nets and READMEs names a
 * section that exists, and nothing cites a file outside the repository;
 * the README's Layout table names every file and directory git holds. */
#define _XOPEN_SOURCE 700
#include <ctype.h>
#include <fnmatch.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests.h"

enum { MAX_SECTIONS = 256, MAX_BAD = 16 };

static char sections[MAX_SECTIONS][16];
static int n_sections;
static int n_refs, n_files;
static char bad[MAX_BAD][512];
static int n_bad;

static void report(const char *fmt, const char *path, int line, const char *what)
{
    if (n_bad < MAX_BAD)
        snprintf(bad[n_bad], sizeof bad[n_bad], fmt, path, line, what);
    n_bad++;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = '\0';
    fclose(f);
    return s;
}

/* "## 4. Damping" -> "4"; "### 4.4 Low-rank" -> "4.4" */
static void load_sections(const char *doc)
{
    char *text = read_all(doc);
    ck_assert_msg(text != NULL, "cannot read %s", doc);
    n_sections = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "## ", 3) && strncmp(line, "### ", 4))
            continue;
        const char *p = line + strspn(line, "# ");
        size_t len = strspn(p, "0123456789.");
        while (len > 0 && p[len - 1] == '.')
            len--;
        if (len > 0 && len < sizeof sections[0] && n_sections < MAX_SECTIONS)
            snprintf(sections[n_sections++], sizeof sections[0], "%.*s", (int)len, p);
    }
    free(text);
}

static int section_exists(const char *id)
{
    for (int i = 0; i < n_sections; i++)
        if (strcmp(sections[i], id) == 0)
            return 1;
    return 0;
}

static const char *DOC = "docs/algorithm.md";

/* Every "docs/algorithm.md §A" and "... §A-B" (A, B like 5 or 5.2) must
 * name sections; the outside references must not occur at all. */
static void scan_text(const char *path, const char *text)
{
    /* spelled in pieces so that this file does not match itself */
    static const char *const outside[] = {"../" "shared", "KFAC" ".md"};
    int line = 1;
    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            line++;
            continue;
        }
        for (size_t i = 0; i < sizeof outside / sizeof *outside; i++)
            if (strncmp(p, outside[i], strlen(outside[i])) == 0)
                report("%s:%d: cites %s, outside the repository", path, line, outside[i]);
        if (strncmp(p, DOC, strlen(DOC)) != 0)
            continue;
        const char *q = p + strlen(DOC);
        if (strncmp(q, " §", strlen(" §")) != 0)
            continue; /* the document itself, not a section */
        q += strlen(" §");
        for (;;) {
            char id[16];
            size_t len = strspn(q, "0123456789.");
            while (len > 0 && q[len - 1] == '.')
                len--;
            snprintf(id, sizeof id, "%.*s", (int)(len < sizeof id ? len : 0), q);
            n_refs++;
            if (len == 0 || !section_exists(id))
                report("%s:%d: docs/algorithm.md has no section %s", path, line, len ? id : "(none given)");
            q += len;
            if (*q != '-' || !isdigit((unsigned char)q[1]))
                break;
            q++;
        }
    }
}

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (type != FTW_F)
        return 0;
    static const char *const kinds[] = {".c", ".h", ".md", ".net", ".py", ".sh", ".in", "Makefile", "run"};
    size_t n = strlen(path);
    int wanted = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        size_t k = strlen(kinds[i]);
        wanted |= n >= k && strcmp(path + n - k, kinds[i]) == 0;
    }
    /* (this file holds bad references on purpose, for the scanner's test) */
    if (!wanted || strstr(path, "/corpus/") || strstr(path, "/regressions/") || strstr(path, "test_docs.c"))
        return 0;
    char *text = read_all(path);
    if (text) {
        n_files++;
        scan_text(path, text);
        free(text);
    }
    return 0;
}

START_TEST(test_algorithm_references_resolve)
{
    char doc[4096];
    snprintf(doc, sizeof doc, "%s/%s", test_root(), DOC);
    load_sections(doc);
    ck_assert_msg(n_sections >= 10, "only %d sections found in %s", n_sections, doc);
    /* the parser must see what it checks against */
    ck_assert(section_exists("4.4") && section_exists("1") && !section_exists("99"));
    static const char *const places[] = {"src", "include", "tests", "examples", "tools", "nets", "bench", "docs",
                                         "README.md", "Makefile", ".ci"};
    n_refs = n_files = n_bad = 0;
    for (size_t i = 0; i < sizeof places / sizeof *places; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", test_root(), places[i]);
        ck_assert_msg(nftw(path, visit, 16, FTW_PHYS) == 0, "cannot walk %s", path);
    }
    for (int i = 0; i < n_bad && i < MAX_BAD; i++)
        fprintf(stderr, "%s\n", bad[i]);
    ck_assert_msg(n_bad == 0, "%d bad references (first: %s)", n_bad, bad[0]);
    /* a walk that found nothing would pass vacuously */
    ck_assert_msg(n_files > 50 && n_refs > 30, "scanned %d files, %d references", n_files, n_refs);
}
END_TEST

/* The scanner itself: a good reference passes, a missing section and an
 * outside citation are both caught. */
START_TEST(test_reference_scanner_catches_bad_ones)
{
    snprintf(sections[0], sizeof sections[0], "4");
    snprintf(sections[1], sizeof sections[1], "4.4");
    snprintf(sections[2], sizeof sections[2], "5");
    n_sections = 3;
    n_refs = n_bad = 0;
    scan_text("good.c", "/* see docs/algorithm.md §4.4 and docs/algorithm.md §4-5. */");
    ck_assert_int_eq(n_bad, 0);
    ck_assert_int_eq(n_refs, 3);
    scan_text("bad.c", "x\n/* docs/algorithm.md §4.7 */");
    ck_assert_int_eq(n_bad, 1);
    ck_assert(strstr(bad[0], "bad.c:2") && strstr(bad[0], "4.7"));
    scan_text("out.c", "/* " "KFAC" ".md 4 */");
    ck_assert_int_eq(n_bad, 2);
}
END_TEST

/* ------------------------------------------------ the README's Layout */

enum { MAX_ROWS = 64, MAX_TOKENS = 96 };

/* A row of the table: the `quoted` words of its first cell and of all of
 * it (paths, directories ending in '/', or fnmatch patterns). */
typedef struct layout_row {
    int n_first, n_all;
    char first[MAX_TOKENS][128], all[MAX_TOKENS][128];
} layout_row;

static int quoted(const char *from, const char *to, char out[][128], int max)
{
    int n = 0;
    for (const char *p = from; p < to && (p = memchr(p, '`', (size_t)(to - p))) != NULL;) {
        const char *end = memchr(p + 1, '`', (size_t)(to - p - 1));
        if (!end)
            break;
        if (n < max && end - p - 1 < 128)
            snprintf(out[n++], 128, "%.*s", (int)(end - p - 1), p + 1);
        p = end + 1;
    }
    return n;
}

/* The rows of the table under "## Layout" in `readme`'s text. */
static int layout_rows(const char *text, layout_row *rows)
{
    const char *at = strstr(text, "\n## Layout\n");
    if (!at)
        return 0;
    const char *stop = strstr(at + 1, "\n## ");
    int n = 0;
    for (const char *line = at + 1; line && (!stop || line < stop) && n < MAX_ROWS;) {
        const char *eol = strchr(line, '\n');
        const char *end = eol ? eol : line + strlen(line);
        if (line[0] == '|' && line[1] == ' ') {
            const char *cell = memchr(line + 1, '|', (size_t)(end - line - 1));
            rows[n].n_first = quoted(line, cell ? cell : end, rows[n].first, MAX_TOKENS);
            rows[n].n_all = quoted(line, end, rows[n].all, MAX_TOKENS);
            n++;
        }
        line = eol ? eol + 1 : NULL;
    }
    return n;
}

/* A path (a directory ends in '/') is listed when a row names it whole
 * (in its first cell, or anywhere with a '/'), or by a pattern, or
 * relative to a directory its first cell names; a directory also when a
 * named path runs through it. */
static int listed(const layout_row *rows, int n, const char *path)
{
    size_t len = strlen(path);
    int dir = len > 0 && path[len - 1] == '/';
    for (int r = 0; r < n; r++) {
        const layout_row *row = &rows[r];
        /* whole paths: the first cell's, and any with a '/' */
        for (int k = 0; k < row->n_first + row->n_all; k++) {
            const char *t = k < row->n_first ? row->first[k] : row->all[k - row->n_first];
            if ((k < row->n_first || strchr(t, '/')) &&
                (fnmatch(t, path, 0) == 0 || (dir && !strncmp(t, path, len))))
                return 1;
        }
        for (int d = 0; d < row->n_first; d++) {
            const char *base = row->first[d];
            size_t bl = strlen(base);
            if (bl == 0 || base[bl - 1] != '/' || strncmp(path, base, bl) != 0)
                continue;
            for (int k = 0; k < row->n_all; k++)
                if (fnmatch(row->all[k], path + bl, 0) == 0 || (dir && !strncmp(row->all[k], path + bl, len - bl)))
                    return 1;
        }
    }
    return 0;
}

/* Every file of `git ls-files`, and every directory on their paths. */
START_TEST(test_layout_lists_every_file)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "cd '%s' && git rev-parse --is-inside-work-tree >/dev/null 2>&1", test_root());
    if (system(cmd) != 0) {
        fprintf(stderr, "docs: %s is not a git work tree; the Layout check needs `git ls-files`\n", test_root());
        return;
    }
    char readme[4096];
    snprintf(readme, sizeof readme, "%s/README.md", test_root());
    char *text = read_all(readme);
    ck_assert_ptr_nonnull(text);
    static layout_row rows[MAX_ROWS];
    int n = layout_rows(text, rows);
    ck_assert_msg(n >= 10, "only %d rows in README.md's Layout table", n);
    snprintf(cmd, sizeof cmd, "cd '%s' && git ls-files", test_root());
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char line[1024], missing[2048] = "";
    int files = 0, unlisted = 0;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        files++;
        /* the file, then each directory on its way */
        for (char *slash = line + strlen(line);; slash = strrchr(line, '/')) {
            char path[1024];
            snprintf(path, sizeof path, "%.*s%s", (int)(slash - line), line, *slash ? "/" : "");
            if (!listed(rows, n, path) && !strstr(missing, path)) {
                unlisted++;
                if (strlen(missing) + strlen(path) + 3 < sizeof missing)
                    strcat(strcat(missing, " "), path);
            }
            *slash = '\0';
            if (!strchr(line, '/'))
                break;
        }
    }
    pclose(p);
    free(text);
    ck_assert_msg(files > 50, "git ls-files gave %d files", files);
    ck_assert_msg(unlisted == 0, "README.md's Layout table does not list %d path%s:%s", unlisted,
                  unlisted == 1 ? "" : "s", missing);
}
END_TEST

/* The matcher: names, patterns, names under a directory row, directories
 * a named path runs through; and what none of them covers. */
START_TEST(test_layout_matcher)
{
    static layout_row rows[MAX_ROWS];
    const char *table = "x\n## Layout\n\n| path | what |\n|---|---|\n"
                        "| `src/` | `net.c`, `cli/main.c` |\n"
                        "| `docs/algorithm.md` | the `bench/results/*` files |\n\n## Next\n| `nets/` | `a.net` |\n";
    int n = layout_rows(table, rows);
    ck_assert_int_eq(n, 3); /* the header row counts, and matches nothing */
    ck_assert(listed(rows, n, "src/") && listed(rows, n, "src/net.c") && listed(rows, n, "src/cli/main.c"));
    ck_assert(listed(rows, n, "src/cli/") && listed(rows, n, "docs/") && listed(rows, n, "bench/results/x.csv"));
    ck_assert(!listed(rows, n, "src/loss.c") && !listed(rows, n, "net.c") && !listed(rows, n, "nets/a.net"));
    ck_assert(!listed(rows, n, "src/cli/util.c") && !listed(rows, n, "docs/other.md"));
}
END_TEST

Suite *docs_suite(void)
{
    Suite *s = suite_create("docs");
    TCase *tc = tcase_create("references");
    tcase_add_test(tc, test_algorithm_references_resolve);
    tcase_add_test(tc, test_reference_scanner_catches_bad_ones);
    tcase_add_test(tc, test_layout_lists_every_file);
    tcase_add_test(tc, test_layout_matcher);
    suite_add_tcase(s, tc);
    return s;
}
