/* test_docs.c - the repository's references lead somewhere: every
 * "docs/algorithm.md §N" in the code, tests, nets and READMEs names a
 * section that exists, and nothing cites a file outside the repository. */
#define _XOPEN_SOURCE 700
#include <ctype.h>
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
    static const char *const places[] = {"src", "include", "tests", "nets", "bench", "docs", "README.md",
                                         "Makefile", ".ci"};
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

Suite *docs_suite(void)
{
    Suite *s = suite_create("docs");
    TCase *tc = tcase_create("references");
    tcase_add_test(tc, test_algorithm_references_resolve);
    tcase_add_test(tc, test_reference_scanner_catches_bad_ones);
    suite_add_tcase(s, tc);
    return s;
}
