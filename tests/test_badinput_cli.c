/* test_badinput_cli.c - `kfac` on bad input, table-driven: broken IDX data
 * sets, net files, flags and checkpoints each give exactly one line on
 * stderr naming the file (and line, for net files) or the flag and the
 * problem, the documented exit status, and no output file (--log, --save)
 * created or changed; and a run that diverges stops with status 4, its
 * last good checkpoint whole and loadable. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>

#include "kfac.h"
#include "tests.h"

/* ------------------------------------------------------------ helpers */

static char out_path[600], err_path[600];

/* Run `[prefix;] kfac ARGS` from the project root; the exit status, with
 * stdout/stderr left in out_path/err_path. A memory cap (ulimit -v) is
 * left out under ASan and valgrind ($KFAC_TEST_NO_MEMCAP), which reserve
 * far more address space themselves; ASan's own allocation limit
 * (max_allocation_size_mb) stands in for it there. */
static int run_prefixed(const char *prefix, const char *args)
{
    const char *nocap = getenv("KFAC_TEST_NO_MEMCAP");
    if (nocap && *nocap && strstr(prefix, "ulimit"))
        prefix = "";
    snprintf(out_path, sizeof out_path, "%s/bad.out", test_tmpdir());
    snprintf(err_path, sizeof err_path, "%s/bad.err", test_tmpdir());
    char cmd[6144];
    snprintf(cmd, sizeof cmd, "cd '%s' && (%s '%s' %s) >'%s' 2>'%s' </dev/null", test_root(), prefix,
             test_kfac_bin(), args, out_path, err_path);
    int st = system(cmd);
    ck_assert_msg(st != -1 && WIFEXITED(st), "could not run: %s", cmd);
    return WEXITSTATUS(st);
}

static int run_kfac(const char *args) { return run_prefixed("", args); }

/* The whole file, NUL-terminated (malloc'ed); *n its size. */
static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    for (size_t got; (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap)
            buf = realloc(buf, (cap *= 2) + 1);
    }
    fclose(f);
    buf[len] = '\0';
    if (n)
        *n = len;
    return buf;
}

static void write_all(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void mkdir_p(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Files a temporary file of an atomic write would leave in dir */
static int tmp_files_in(const char *dir)
{
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '\\.tmp' >/dev/null", dir);
    return system(cmd) == 0;
}

/* The last run failed with `status` and exactly one line on stderr that
 * starts "kfac: " and contains every non-NULL word. */
static void expect_one_line(const char *what, int got, int status, const char *w1, const char *w2)
{
    char *err = read_all(err_path, NULL);
    ck_assert_msg(got == status, "%s: exit %d, expected %d; stderr: %s", what, got, status, err);
    ck_assert_msg(count_lines(err) == 1 && strncmp(err, "kfac: ", 6) == 0,
                  "%s: expected one 'kfac: ' line on stderr, got: %s", what, err);
    ck_assert_msg(!w1 || strstr(err, w1), "%s: stderr lacks '%s': %s", what, w1, err);
    ck_assert_msg(!w2 || strstr(err, w2), "%s: stderr lacks '%s': %s", what, w2, err);
    free(err);
}

/* ------------------------------------------------------- IDX data sets */

enum { F_TRAIN_IMG, F_TRAIN_LAB, F_TEST_IMG, F_TEST_LAB, F_COUNT };
static const char *const idx_name[F_COUNT] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
enum { N_TRAIN = 120, N_TEST = 40 };

typedef struct idx_file {
    unsigned char *b;
    size_t n;
    int gz, missing;
} idx_file;

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* n images of rows x cols (each class lights one row; all zero if `zero`)
 * and their labels, as IDX bytes */
static void make_set(idx_file *img, idx_file *lab, int n, int rows, int cols, int zero, uint64_t seed)
{
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    size_t px = (size_t)rows * cols;
    img->n = 16 + (size_t)n * px;
    lab->n = 8 + (size_t)n;
    img->b = calloc(img->n + 64, 1);
    lab->b = calloc(lab->n + 64, 1);
    be32(img->b, 0x803), be32(img->b + 4, (uint32_t)n), be32(img->b + 8, (uint32_t)rows);
    be32(img->b + 12, (uint32_t)cols);
    be32(lab->b, 0x801), be32(lab->b + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        int c = (int)kfac_rng_below(&r, 10);
        lab->b[8 + i] = (unsigned char)c;
        unsigned char *p = img->b + 16 + (size_t)i * px;
        if (zero)
            continue;
        for (size_t k = 0; k < px; k++)
            p[k] = (unsigned char)kfac_rng_below(&r, 60);
        memset(p + (size_t)cols * ((size_t)(2 + 2 * c) % (size_t)rows), 255, (size_t)cols);
    }
}

static void make_good(idx_file f[F_COUNT], int rows, int cols, int zero)
{
    memset(f, 0, sizeof(idx_file) * F_COUNT);
    make_set(&f[F_TRAIN_IMG], &f[F_TRAIN_LAB], N_TRAIN, rows, cols, zero, 3);
    make_set(&f[F_TEST_IMG], &f[F_TEST_LAB], N_TEST, rows, cols, zero, 4);
}

static void gz_bytes(idx_file *f)
{
    uLongf cap = compressBound((uLong)f->n) + 64;
    unsigned char *out = malloc(cap);
    /* a gzip wrapper: deflateInit2 with 16 + MAX_WBITS */
    z_stream z = {0};
    ck_assert_int_eq(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = f->b;
    z.avail_in = (uInt)f->n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t n = z.total_out;
    deflateEnd(&z);
    free(f->b);
    f->b = out;
    f->n = n;
    f->gz = 1;
}

/* Write the four files into dir (created); returns nothing, asserts. */
static void write_set(const char *dir, idx_file f[F_COUNT])
{
    mkdir_p(dir);
    for (int i = 0; i < F_COUNT; i++) {
        char path[800];
        snprintf(path, sizeof path, "%s/%s%s", dir, idx_name[i], f[i].gz ? ".gz" : "");
        if (!f[i].missing)
            write_all(path, f[i].b, f[i].n);
        free(f[i].b);
    }
}

/* A good 28x28 data set for nets/small.net, made once per test process. */
static const char *good_data(void)
{
    static char dir[600];
    snprintf(dir, sizeof dir, "%s/bi-good", test_tmpdir());
    if (!exists(dir)) {
        idx_file f[F_COUNT];
        make_good(f, 28, 28, 0);
        write_set(dir, f);
    }
    return dir;
}

typedef struct idx_case {
    const char *name;
    int file;            /* the broken one, named in the message; -1: the directory */
    const char *problem; /* in the message */
    const char *prefix;  /* shell commands before kfac (a memory cap) */
} idx_case;

static const idx_case idx_cases[] = {
    {"empty", F_TRAIN_IMG, "empty file", ""},
    {"trunc-header", F_TRAIN_LAB, "truncated header (6 of 8 bytes)", ""},
    {"trunc-data", F_TEST_IMG, "truncated data (31280 of 31360 bytes for 40 x 28 x 28)", ""},
    {"magic", F_TRAIN_IMG, "bad magic 0x01000803 (not an IDX file)", ""},
    {"type", F_TEST_IMG, "element type 0x0a is none of IDX's (0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x0e)", ""},
    {"ndims", F_TRAIN_LAB, "2 dimensions, expected 1 for labels", ""},
    {"zero-dim", F_TRAIN_IMG, "zero dimension in 120 x 0 x 28", ""},
    {"overflow", F_TRAIN_IMG, "dimensions 4294967295 x 4294967295 x 4294967295 too large", ""},
    {"features", F_TRAIN_IMG, "dimensions 120 x 65536 x 65536 too large (more than 1000000 features", ""},
    /* 1.5 GB promised by a small gzip file, under a 1 GB address-space
     * cap: found truncated without allocating what the header says */
    {"absurd", F_TRAIN_IMG, "truncated data (94080 of 1568000000 bytes", "ulimit -v 1000000;"},
    {"count", F_TRAIN_LAB, "119 labels but", ""},
    {"label", F_TEST_LAB, "label 12 at index 7 outside [0, 10)", ""},
    {"gzip-corrupt", F_TRAIN_IMG, "gzip", ""},
    {"gzip-cut", F_TRAIN_IMG, "gzip stream ends early", ""},
    {"trailing", F_TEST_LAB, "3 trailing bytes after the 40 bytes of data", ""},
    {"missing", F_TEST_LAB, "No such file or directory", ""},
    {"size-net", -1, "the data has 100 features per example (10x10) but the network takes 784 inputs", ""},
    {"size-sets", -1, "t10k-images-idx3-ubyte: images of 14x14, but those of ", ""},
    /* the same size in another shape: 40 x 784 beside 120 x 28 x 28 */
    {"shape-sets", F_TEST_IMG, "images of 1x784, but those of ", ""},
    /* bytes after the gzip stream, which zlib's gzread drops */
    {"gzip-trailing", F_TEST_LAB, "4 bytes after the end of the gzip stream (not gzip)", ""},
};

START_TEST(test_bad_idx)
{
    const idx_case *c = &idx_cases[_i];
    char dir[600];
    snprintf(dir, sizeof dir, "%s/bi-idx-%s", test_tmpdir(), c->name);
    idx_file f[F_COUNT];
    make_good(f, !strcmp(c->name, "size-net") ? 10 : 28, !strcmp(c->name, "size-net") ? 10 : 28, 0);
    idx_file *b = c->file >= 0 ? &f[c->file] : NULL;
    switch (_i) {
    case 0: b->n = 0; break;
    case 1: b->n = 6; break;
    case 2: b->n -= 80; break;
    case 3: b->b[0] = 1; break;
    case 4: b->b[2] = 0x0A; break;
    case 5: b->b[3] = 2; break;
    case 6: be32(b->b + 8, 0); break;
    case 7: for (int k = 4; k < 16; k++) b->b[k] = 0xFF; break;
    case 8: be32(b->b + 8, 65536), be32(b->b + 12, 65536); break;
    case 9:
        be32(b->b + 4, 2000000);
        be32(f[F_TRAIN_LAB].b + 4, 2000000);
        gz_bytes(b);
        break;
    case 10: be32(b->b + 4, N_TRAIN - 1), b->n--; break;
    case 11: b->b[8 + 7] = 12; break;
    case 12:
    case 13:
        gz_bytes(b);
        if (_i == 13)
            b->n -= 12;
        else
            for (size_t k = b->n / 2; k < b->n / 2 + 4; k++)
                b->b[k] ^= 0x5A;
        break;
    case 14: memcpy(b->b + b->n, "xyz", 3), b->n += 3; break;
    case 15: b->missing = 1; break;
    case 16: break; /* 10x10 images for a 784-input network */
    case 17: {       /* a t10k set of another size */
        free(f[F_TEST_IMG].b), free(f[F_TEST_LAB].b);
        make_set(&f[F_TEST_IMG], &f[F_TEST_LAB], N_TEST, 14, 14, 0, 4);
        break;
    }
    case 18: /* 2 dimensions: N_TEST x 784 */
        b->b[3] = 2;
        be32(b->b + 8, 784);
        memmove(b->b + 12, b->b + 16, b->n - 16);
        b->n -= 4;
        break;
    case 19: gz_bytes(b), memcpy(b->b + b->n, "junk", 4), b->n += 4; break;
    }
    write_set(dir, f);
    char path[800], log[800], ckpt[800], args[4096];
    if (b)
        snprintf(path, sizeof path, "%s/%s", dir, idx_name[c->file]);
    else
        snprintf(path, sizeof path, "%s", dir);
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    snprintf(args, sizeof args,
             "train nets/small.net --data '%s' --threads 1 --epochs 1 --batch 20 --quiet --log '%s' --save '%s'",
             dir, log, ckpt);
    int got = run_prefixed(c->prefix, args);
    expect_one_line(c->name, got, 3, path, c->problem);
    ck_assert_msg(!exists(log) && !exists(ckpt), "%s: an output file was created", c->name);
    /* eval reads only t10k: it too names the broken file */
    if (c->file == F_TEST_IMG || c->file == F_TEST_LAB) {
        /* the checkpoint is looked at first: make one that loads */
        snprintf(args, sizeof args,
                 "train nets/small.net --data '%s' --threads 1 --epochs 1 --batch 20 --quiet --save '%s'", good_data(),
                 ckpt);
        ck_assert_int_eq(run_kfac(args), 0);
        snprintf(args, sizeof args, "eval nets/small.net --data '%s' --load '%s' --threads 1", dir, ckpt);
        got = run_kfac(args);
        expect_one_line(c->name, got, 3, path, c->problem);
    }
}
END_TEST

/* ------------------------------------------------------------ net files */

#define NET784 "[net]\ninputs = 784\n[dense]\nunits = 10\nactivation = linear\n"

typedef struct net_case {
    const char *text;
    const char *where;   /* ":LINE: " after the path, or ": " for the whole file */
    const char *problem;
} net_case;

static const net_case net_cases[] = {
    {NET784 "[convolution]\nunits = 3\n", ":6: ",
     "unknown section [convolution] (net, dense, conv, pool, train, kfac, sgd, momentum, nesterov, adam)"},
    {NET784 "[conv]\nunits = 3\n", ":7: ", "unknown key 'units' in [conv] (channels, kernel, stride, pad, activation)"},
    {"[net]\ninputs = 784\n[dense]\nsize = 10\n", ":4: ", "unknown key 'size' in [dense] (units, activation)"},
    {NET784 "[train]\nlr = 0.1\nepochs = 2\nlr = 0.2\n", ":9: ", "duplicated key 'lr' in [train] (first at line 7)"},
    {"[net]\ninputs = many\n", ":2: ", "inputs needs an integer, got 'many'"},
    {NET784 "[train]\nlr = fast\n", ":7: ", "lr needs a number, got 'fast'"},
    {NET784 "[train]\nseed = -1\n", ":7: ", "seed needs a non-negative integer"},
    {NET784 "[train]\nlr = 2000\n", ":7: ", "lr = 2000 is outside (0, 1000]"},
    {NET784 "[train]\nlr = inf\n", ":7: ", "lr = inf is outside (0, 1000]"},
    {NET784 "[kfac]\ndamping = 0\n", ":7: ", "damping = 0 is outside (0, 1000000]"},
    {NET784 "[train]\nbatch = 0\n", ":7: ", "batch = 0 is outside [1, 1000000]"},
    {"[net]\ninputs = 784\n[dense]\nunits = 0\n", ":4: ", "units = 0 is outside [1, 1000000]"},
    {"[net]\ninputs = 784\n[dense]\nunits = -10\n", ":4: ", "units = -10 is outside [1, 1000000]"},
    {"[net]\ninputs = -784\n", ":2: ", "inputs = -784 is outside [1, 10000000]"},
    {"[net]\ninputs = 99999999999999999999\n", ":2: ", "is outside [1, 10000000]"},
    {"[net]\ninputs = 784\n[dense]\nunits = 2000000\n", ":4: ", "units = 2000000 is outside"},
    {"[net]\ninputs = 784\n", ": ", "no layer ([dense], [conv] or [pool] section)"},
    {"[net]\ninputs = 784\n[train]\nlr = 0.1\n", ": ", "no layer ([dense], [conv] or [pool] section)"},
    {"", ": ", "no [net] section"},
    /* within every key's range, but 10^12 parameters: refused before any
     * allocation */
    {"[net]\ninputs = 1000000\nloss = squared\n[dense]\nunits = 1000000\n", ":4: ",
     "layer 1 (dense): 1000001000000 parameters: more than 2^30"},
    {NET784 "[train]\noptimizer = lbfgs\n", ":7: ", "unknown optimizer 'lbfgs' (sgd, momentum, nesterov, adam, kfac)"},
    {"[net]\ninputs = 784\n[dense]\nunits = 10\nactivation = relu\n", ":3: ", "the last layer must be linear"},
    /* convolutions and pooling: each problem at its section's line */
    {"[net]\ninputs = 784\n[conv]\nchannels = 4\n[dense]\nunits = 10\nactivation = linear\n", ":3: ",
     "[conv] without kernel"},
    {"[net]\ninputs = 784\n[conv]\nchannels = 4\nkernel = 5x\n", ":5: ",
     "kernel needs N or HxW of integers in [1, 64], got '5x'"},
    {"[net]\ninputs = 784\n[conv]\nchannels = 4\nkernel = 0\n", ":5: ", "kernel needs N or HxW"},
    {"[net]\ninputs = 784\n[conv]\nchannels = 4\nkernel = 3\npad = half\n", ":6: ",
     "pad needs 'same' or an integer in [0, 63], got 'half'"},
    {"[net]\ninputs = 784\nshape = 28x28\n", ":3: ", "shape needs HxWxC (height x width x channels, as 28x28x1)"},
    {"[net]\ninputs = 784\nshape = 28x28x3\n[conv]\nchannels = 4\nkernel = 3\n[dense]\nunits = 10\n"
     "activation = linear\n", ":4: ", "layer 1 (conv): input shape 28x28x3 is not 784 inputs"},
    {"[net]\ninputs = 785\n[conv]\nchannels = 4\nkernel = 3\n[dense]\nunits = 10\nactivation = linear\n",
     ":3: ", "785 inputs are not a square image: give the input's shape (net file: [net] shape = HxWxC)"},
    {"[net]\ninputs = 16\n[conv]\nchannels = 4\nkernel = 5\n[dense]\nunits = 10\nactivation = linear\n",
     ":3: ", "layer 1 (conv): kernel 5x5 larger than the"},
    {"[net]\ninputs = 784\n[conv]\nchannels = 4\nkernel = 4\npad = same\n[dense]\nunits = 10\n"
     "activation = linear\n", ":3: ", "layer 1 (conv): pad = same needs an odd kernel, not 4x4"},
    {"[net]\ninputs = 784\n[conv]\nchannels = 4\nkernel = 3\n[pool]\ntype = median\nsize = 2\n", ":7: ",
     "unknown pooling 'median' (max, avg)"},
    {"[net]\ninputs = 784\n[conv]\nchannels = 4\nkernel = 3\n[pool]\nsize = 30\n[dense]\nunits = 10\n"
     "activation = linear\n", ":6: ", "layer 2 (maxpool): "},
    {"[net]\ninputs = 784\n[pool]\nsize = 2\n", ": ", "no layer with weights (dense or conv)"},
    {"[net]\ninputs = 784\n[dense]\nunits\n", ":4: ", "expected 'key = value'"},
};

START_TEST(test_bad_netfile)
{
    const net_case *c = &net_cases[_i];
    char dir[600], net[800], log[800], ckpt[800], where[900], args[4096];
    snprintf(dir, sizeof dir, "%s/bi-net", test_tmpdir());
    mkdir_p(dir);
    snprintf(net, sizeof net, "%s/case%d.net", dir, _i);
    snprintf(log, sizeof log, "%s/case%d.csv", dir, _i);
    snprintf(ckpt, sizeof ckpt, "%s/case%d.ckpt", dir, _i);
    write_all(net, c->text, strlen(c->text));
    snprintf(where, sizeof where, "kfac: %s%s", net, c->where);
    static const char *const cmds[] = {"train", "compare", "eval", "check"};
    for (int k = 0; k < 4; k++) {
        snprintf(args, sizeof args, "%s '%s' --data '%s' --threads 1 %s", cmds[k], net, good_data(),
                 k < 2 ? "--log" : k == 2 ? "--load" : "--examples 10");
        if (k < 3)
            snprintf(args + strlen(args), sizeof args - strlen(args), " '%s'", k < 2 ? log : ckpt);
        if (k == 0)
            snprintf(args + strlen(args), sizeof args - strlen(args), " --save '%s'", ckpt);
        int got = run_kfac(args);
        expect_one_line(args, got, 3, where, c->problem);
        ck_assert_msg(!exists(log) && !exists(ckpt), "%s: an output file was created", args);
    }
}
END_TEST

/* A net file that parses, for other data: 1000000 outputs (a 3 GB network
 * with its optimizer state) is refused for the data's 10 classes before
 * anything of that size is allocated. */
START_TEST(test_net_does_not_fit_data)
{
    char net[800], args[4096];
    snprintf(net, sizeof net, "%s/bi-huge.net", test_tmpdir());
    const char *text = "[net]\ninputs = 784\n[dense]\nunits = 1000000\nactivation = linear\n";
    write_all(net, text, strlen(text));
    snprintf(args, sizeof args, "train '%s' --data '%s' --threads 1 --batch 20 --quiet", net, good_data());
    int got = run_prefixed("ulimit -v 1000000;", args);
    expect_one_line("huge net", got, 3, good_data(), "the data has 10 classes but the network has 1000000 outputs");
}
END_TEST


/* ------------------------------------------------------------ CSV data */

typedef struct csv_case {
    const char *name;
    const char *train, *test; /* the files' text (test NULL: one file) */
    const char *where;        /* "train.csv:3: " */
    const char *problem;
} csv_case;

#define CSV_OK "f1,f2,f3,label\n0.1,0.2,0.3,0\n0.4,0.5,0.6,1\n0.7,0.8,0.9,2\n0.1,0.1,0.1,1\n"

static const csv_case csv_cases[] = {
    {"fields", CSV_OK "1,2,0\n", CSV_OK, "train.csv:6: ", "3 fields, expected 4 (as line 1)"},
    {"number", CSV_OK, CSV_OK "1,2,zz,0\n", "test.csv:6: ", "field 3, 'zz', is not a number"},
    {"label-int", CSV_OK "1,2,3,1.0\n", CSV_OK, "train.csv:6: ", "label (field 4) '1.0' is not an integer"},
    {"label-range", CSV_OK "1,2,3,3\n", CSV_OK, "train.csv:6: ", "label 3 at index 4 outside [0, 3)"},
    {"empty", "", CSV_OK, "train.csv: ", "empty file"},
    {"header-only", CSV_OK, "f1,f2,f3,label\n", "test.csv: ", "no data rows after the header (line 1)"},
    {"no-test", CSV_OK, "", "test.csv: ", "No such file or directory (the directory has train.csv)"},
    {"sizes", CSV_OK, "a,b,c,label,e\n1,2,3,0,4\n", ": ", "the test set has 4 features but the training set 3"},
    {"one-file", CSV_OK "5,5,5,9\n", NULL, "train.csv:6: ", "label 9 at index 4 outside [0, 3)"},
};

/* Every kind of malformed CSV data through `kfac train`: one line naming
 * file:line and the problem, exit 3, no output file. */
START_TEST(test_bad_csv)
{
    const csv_case *c = &csv_cases[_i];
    char dir[600], path[800], net[800], log[800], args[4096];
    snprintf(dir, sizeof dir, "%s/bi-csv-%s", test_tmpdir(), c->name);
    mkdir_p(dir);
    snprintf(net, sizeof net, "%s/three.net", dir);
    static const char net_text[] = "[net]\ninputs = 3\n[dense]\nunits = 3\nactivation = linear\n"
                                   "[train]\nbatch = 2\nepochs = 1\nlabel_column = 4\n";
    write_all(net, net_text, strlen(net_text));
    snprintf(path, sizeof path, "%s/train.csv", dir);
    write_all(path, c->train, strlen(c->train));
    if (c->test && *c->test) {
        snprintf(path, sizeof path, "%s/test.csv", dir);
        write_all(path, c->test, strlen(c->test));
    }
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(args, sizeof args, "train '%s' --data '%s%s' --threads 1 --quiet --log '%s'", net, dir,
             c->test ? "" : "/train.csv", log);
    char where[900];
    snprintf(where, sizeof where, "%s%s%s", dir, c->where[0] == ':' ? "" : "/", c->where);
    int got = run_kfac(args);
    expect_one_line(c->name, got, 3, where, c->problem);
    ck_assert_msg(!exists(log), "%s: an output file was created", c->name);
}
END_TEST

/* ---------------------------------------------------------------- flags */

typedef struct flag_case {
    const char *args; /* after `train nets/small.net --data DIR --threads 1` */
    const char *problem;
} flag_case;

static const flag_case flag_cases[] = {
    {"--frobnicate 3", "train: unknown option '--frobnicate' (try 'kfac train --help')"},
    {"-x", "train: unknown option '-x' (try 'kfac train --help')"},
    {"nets/small.net", "train: unexpected argument 'nets/small.net' (one NETFILE only)"},
    {"--dam 0.1", "train: unknown option '--dam'"}, /* no abbreviations */
    {"--epochs 1 --lr", "train: --lr needs a value"},
    {"--lr=", "train: --lr needs a value"},
    {"--log", "train: --log needs a value"},
    {"--resume", "train: --resume needs a value"},
    {"--lr 0", "train: --lr '0': train.lr = 0 is outside (0, 1000]"},
    {"--lr -1", "train: --lr '-1': train.lr = -1 is outside (0, 1000]"},
    {"--lr 1001", "train: --lr '1001': train.lr = 1001 is outside (0, 1000]"},
    {"--lr 1e40", "train: --lr '1e40': train.lr = 1e40 is outside (0, 1000]"},
    {"--lr nan", "train: --lr 'nan': train.lr = nan is outside (0, 1000]"},
    {"--lr inf", "train: --lr 'inf': train.lr = inf is outside (0, 1000]"},
    {"--lr 0.1x", "train: --lr '0.1x': train.lr needs a number, got '0.1x'"},
    {"--optimizer kfac --damping 0", "train: --damping '0': damping = 0 is outside (0, 1000000]"},
    {"--damping -1", "train: --damping '-1': damping = -1 is outside (0, 1000000]"},
    {"--damping 2e6", "train: --damping '2e6': damping = 2e6 is outside (0, 1000000]"},
    {"--damping nan", "train: --damping 'nan': damping = nan is outside (0, 1000000]"},
    {"--batch 0", "train: --batch '0': batch = 0 is outside [1, 1000000]"},
    {"--batch -5", "train: --batch '-5'"},
    {"--batch 1000001", "train: --batch '1000001'"},
    {"--batch 12x", "train: --batch '12x'"},
    {"--batch 121", "batch 121 larger than the training set (120 examples)"},
    {"--threads 0", "train: --threads '0': expected an integer in [1, 1024]"},
    {"--threads 1025", "train: --threads '1025'"},
    {"--threads two", "train: --threads 'two'"},
    {"--epochs 0", "train: --epochs '0'"},
    {"--momentum 1", "train: --momentum '1': train.momentum = 1 is outside [0, 1)"},
    {"--decay 1", "train: --decay '1': decay = 1 is outside [0, 1)"},
    {"--kl-clip 0", "train: --kl-clip '0': kl_clip = 0 is outside (0, 1000000]"},
    {"--stat-fraction 1.5", "train: --stat-fraction '1.5': stat_fraction = 1.5 is outside (0, 1]"},
    {"--cov-every 0", "train: --cov-every '0'"},
    {"--inversion lu", "train: --inversion 'lu'"},
    {"--optimizer adam --beta1 1", "train: --beta1 '1': beta1 = 1 is outside [0, 1)"},
    {"--beta1 -0.5", "train: --beta1 '-0.5': beta1 = -0.5 is outside [0, 1)"},
    {"--beta2 0.99999999", "train: --beta2 '0.99999999': beta2 = 0.99999999 is outside [0, 1)"},
    {"--beta2 x", "train: --beta2 'x': beta2 needs a number, got 'x'"},
    {"--eps 0", "train: --eps '0': eps = 0 is outside (0, 1]"},
    {"--eps 2", "train: --eps '2': eps = 2 is outside (0, 1]"},
    {"--eps nan", "train: --eps 'nan': eps = nan is outside (0, 1]"},
    {"--eps", "train: --eps needs a value"},
    {"--save-every 0", "train: --save-every '0': expected an integer in [1, 100000]"},
    /* what a shell's quoting or habit hands over */
    {"--seed ' -1'", "train: --seed ' -1': seed needs a non-negative integer, got ' -1'"},
    {"--seed +3", "train: --seed '+3': seed needs a non-negative integer"},
    {"--quiet=1", "train: --quiet takes no value"},
    {"--val-fraction 1", "train: --val-fraction '1': val_fraction = 1 is outside [0, 1)"},
    {"--val-fraction -0.1", "train: --val-fraction '-0.1': val_fraction = -0.1 is outside [0, 1)"},
    {"--val-fraction 0.001", "nets/small.net: val_fraction 0.001 of 120 examples leaves no example to validate"},
    {"--val-fraction 0.5 --batch 61", "nets/small.net: batch 61 larger than the training set (60 examples)"},
    {"--early-stop 3", "nets/small.net: early_stop = 3 needs a validation set: val_fraction > 0"},
    {"--early-stop -1", "train: --early-stop '-1': early_stop = -1 is outside [0, 100000]"},
    {"--label-column 0", "train: --label-column '0': label_column = 0 is outside [1, 1000001]"},
};

START_TEST(test_bad_flag)
{
    const flag_case *c = &flag_cases[_i];
    char dir[600], log[800], ckpt[800], args[4096];
    snprintf(dir, sizeof dir, "%s/bi-flag%d", test_tmpdir(), _i);
    mkdir_p(dir);
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    /* the bad flag last, so a missing value is really missing */
    snprintf(args, sizeof args, "train nets/small.net --data '%s' --threads 1 --quiet --save '%s' --log '%s' %s",
             good_data(), ckpt, log, c->args);
    int got = run_kfac(args);
    expect_one_line(c->args, got, 2, c->problem, NULL);
    ck_assert_msg(!exists(log) && !exists(ckpt), "%s: an output file was created", c->args);
}
END_TEST

START_TEST(test_bad_flag_other_commands)
{
    static const flag_case cases[] = {
        {"eval nets/small.net --load", "eval: --load needs a value"},
        {"eval nets/small.net --load x.ckpt --threads 0", "eval: --threads '0': expected an integer in [1, 1024]"},
        {"eval nets/small.net --load x.ckpt --frobnicate 1", "eval: unknown option '--frobnicate'"},
        {"eval nets/small.net", "eval: --load FILE is required"},
        {"check nets/tiny.net --damping 0", "check: --damping '0': damping = 0 is outside (0, 1000000]"},
        {"check nets/tiny.net --examples 100001", "check: --examples '100001'"},
        {"compare nets/small.net --optimizers kfac,lbfgs", "unknown optimizer 'lbfgs'"},
        {"compare nets/small.net --resume x.ckpt", "compare: unknown option '--resume'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_one_line(cases[i].args, run_kfac(cases[i].args), 2, cases[i].problem, NULL);
}
END_TEST

/* A newline or another control character in a name stays on the one line
 * of the message, escaped. */
START_TEST(test_control_chars_in_names)
{
    const char *args = "train 'nets/sm\nall\001.net'";
    expect_one_line(args, run_kfac(args), 3, "nets/sm\\nall\\x01.net: No such file or directory", NULL);
}
END_TEST

/* Outputs are checked before training: a --save that could not be written
 * at the end, and a --log that is the checkpoint's own file (directly,
 * through a symbolic link or as a hard link), stop the run at once, with
 * nothing written. */
START_TEST(test_outputs_checked_first)
{
    char dir[512], ck[600], soft[600], hard[600], args[4096], longname[700];
    snprintf(dir, sizeof dir, "%s/bi-out", test_tmpdir());
    mkdir_p(dir);
    snprintf(ck, sizeof ck, "%s/run.ckpt", dir);
    snprintf(args, sizeof args, "train nets/small.net --data '%s' --threads 1 --epochs 1 --batch 20 --quiet --save '%s'",
             good_data(), ck);
    ck_assert_msg(run_kfac(args) == 0, "%s", read_all(err_path, NULL));
    size_t n0;
    char *before = read_all(ck, &n0);
    static const struct {
        const char *extra; /* after `train nets/small.net --data DIR --threads 1 --epochs 1` */
        int status;
        const char *problem;
    } cases[] = {
        {"--save '%s/no/such/dir/x.ckpt'", 1, "its directory does not exist"},
        {"--save '%s'", 1, "is a directory"},
        {"--save '%s/run.ckpt' --log '%s/run.ckpt'", 2, "is --save's file too"},
        {"--save '%s/new.ckpt' --log '%s/../bi-out/new.ckpt'", 2, "is --save's file too"},
        {"--resume '%s/run.ckpt' --log '%s/run.ckpt'", 2, "is --resume's file too"},
        {"--resume '%s/run.ckpt' --log '%s/link.csv'", 2, "is --resume's file too"},
        {"--resume '%s/run.ckpt' --log '%s/hard.csv'", 2, "is --resume's file too"},
    };
    snprintf(soft, sizeof soft, "%s/link.csv", dir);
    snprintf(hard, sizeof hard, "%s/hard.csv", dir);
    ck_assert_int_eq(symlink(ck, soft), 0);
    ck_assert_int_eq(link(ck, hard), 0);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char extra[2048];
        snprintf(extra, sizeof extra, cases[i].extra, dir, dir);
        snprintf(args, sizeof args, "train nets/small.net --data '%s' --threads 1 --epochs 2 --batch 20 %s",
                 good_data(), extra);
        expect_one_line(args, run_kfac(args), cases[i].status, cases[i].problem, NULL);
        char *out = read_all(out_path, NULL);
        ck_assert_msg(count_lines(out) == 0, "%s: the run started", args);
        free(out);
        size_t n1;
        char *after = read_all(ck, &n1);
        ck_assert_msg(n1 == n0 && !memcmp(before, after, n0), "%s: the checkpoint changed", args);
        free(after);
    }
    /* a name with no room for the temporary suffix */
    memset(longname, 'a', 250);
    longname[250] = '\0';
    snprintf(args, sizeof args, "train nets/small.net --data '%s' --save '%s/%s'", good_data(), dir, longname);
    expect_one_line(args, run_kfac(args), 1, "too long for its temporary file", NULL);
    free(before);
}
END_TEST

/* Output lost to a full disk is a failure (exit 1, one line), though the
 * run goes on: train still writes its checkpoint, eval still evaluates. */
START_TEST(test_stdout_full)
{
    char dir[512], ck[600], cmd[4096];
    snprintf(dir, sizeof dir, "%s/bi-full", test_tmpdir());
    mkdir_p(dir);
    snprintf(ck, sizeof ck, "%s/full.ckpt", dir);
    snprintf(err_path, sizeof err_path, "%s/bad.err", test_tmpdir());
    static const char *const runs[] = {
        "train nets/small.net --data '%s' --threads 1 --epochs 1 --batch 20 --quiet --save '%s'",
        "eval nets/small.net --data '%s' --threads 1 --load '%s'",
    };
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        char args[2048];
        snprintf(args, sizeof args, runs[i], good_data(), ck);
        snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >/dev/full 2>'%s' </dev/null", test_root(), test_kfac_bin(),
                 args, err_path);
        int st = system(cmd);
        ck_assert_msg(st != -1 && WIFEXITED(st), "could not run: %s", cmd);
        expect_one_line(args, WEXITSTATUS(st), 1, "standard output: No space left on device", NULL);
        if (i == 0) { /* the checkpoint was still written */
            size_t n;
            char *c = read_all(ck, &n);
            ck_assert_msg(n > 100, "no checkpoint after the lost output");
            free(c);
        }
    }
}
END_TEST

/* --threads past what can run is cut, said on one stderr line with the
 * reason, and the header's count is the one used: past OpenBLAS's
 * maximum (1000 ran 64 silently), and under `ulimit -v 4000000`, where
 * 32 threads hung for good in OpenBLAS's buffer allocation (each thread
 * maps 128 MiB); and under every limit from 360 to 700 MB a run trains or
 * says it lacks memory, where between the two its first product waited
 * forever for OpenBLAS's buffer. `timeout -k 5 120` turns a hang into a
 * failure (a run takes a second; -k as a hung run never reaches the step
 * end where it would stop for SIGTERM). The limited runs are left out under ASan and valgrind
 * ($KFAC_TEST_NO_MEMCAP). */
START_TEST(test_threads_capped)
{
    static const struct {
        const char *prefix, *threads, *why;
    } runs[] = {
        {"", "1000", "OpenBLAS runs at most "},
        {"ulimit -v 4000000; timeout -k 5 120", "32", "the memory limits leave room for "},
        {"ulimit -v 4000000; timeout -k 5 120", "1000", "the memory limits leave room for "},
    };
    const char *nocap = getenv("KFAC_TEST_NO_MEMCAP");
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        if (*runs[i].prefix && nocap && *nocap)
            continue;
        char args[2048], what[64];
        snprintf(args, sizeof args, "train nets/small.net --data '%s' --threads %s --epochs 1 --batch 20 --quiet",
                 good_data(), runs[i].threads);
        snprintf(what, sizeof what, "--threads %s (%s)", runs[i].threads, runs[i].prefix);
        int got = run_prefixed(runs[i].prefix, args);
        char *err = read_all(err_path, NULL), *out = read_all(out_path, NULL);
        ck_assert_msg(got == 0, "%s: exit %d (124: a hang cut by timeout); stderr: %s", what, got, err);
        char want[128];
        snprintf(want, sizeof want, "kfac: --threads %s: %s", runs[i].threads, runs[i].why);
        ck_assert_msg(count_lines(err) == 1 && strncmp(err, want, strlen(want)) == 0, "%s: stderr: %s", what, err);
        const char *using = strstr(err, "; using ");
        ck_assert_msg(using, "%s: stderr: %s", what, err);
        int n = atoi(using + 8);
        ck_assert_msg(n >= 1 && n < atoi(runs[i].threads), "%s: %s", what, err);
        char header[64];
        snprintf(header, sizeof header, ", %d threads", n);
        ck_assert_msg(strstr(out, header), "%s: the header lacks '%s': %s", what, header, out);
        free(err);
        free(out);
    }
    if (nocap && *nocap)
        return;
    /* limits from a little above where the program starts (about 325 MB
     * here: below, OpenBLAS hangs as it loads, before main) to where it
     * trains: a run trains, or stops with one line about memory (exit 1);
     * from 340 to 430 MB its first product (batch 64) waited forever for
     * OpenBLAS's 129 MiB buffer */
    for (long v = 360000; v <= 700000; v += 20000) {
        char prefix[96], args[2048];
        snprintf(prefix, sizeof prefix, "ulimit -v %ld; timeout -k 5 120", v);
        snprintf(args, sizeof args, "train nets/small.net --data '%s' --threads 2 --epochs 1 --batch 64 --quiet",
                 good_data());
        int got = run_prefixed(prefix, args);
        char *err = read_all(err_path, NULL);
        ck_assert_msg(got == 0 || (got == 1 && count_lines(err) == 1 &&
                                   (strstr(err, "memory limits leave") || strstr(err, "cannot allocate"))),
                      "ulimit -v %ld: exit %d (124, 137: a hang cut by timeout); stderr: %s", v, got, err);
        free(err);
    }
}
END_TEST

/* ---------------------------------------------------------- checkpoints */

/* A momentum checkpoint of nets/small.net after one epoch on the good
 * data, and a K-FAC one of nets/tiny.net (another network). */
static void make_checkpoints(const char *dir, char *small, char *tiny, size_t cap)
{
    char args[4096];
    mkdir_p(dir);
    snprintf(small, cap, "%s/small.ckpt", dir);
    snprintf(tiny, cap, "%s/tiny.ckpt", dir);
    snprintf(args, sizeof args,
             "train nets/small.net --data '%s' --threads 1 --epochs 1 --batch 20 --quiet --save '%s'", good_data(),
             small);
    ck_assert_msg(run_kfac(args) == 0, "%s", read_all(err_path, NULL));
    snprintf(args, sizeof args, "train nets/tiny.net --data '%s' --threads 1 --epochs 1 --batch 20 --quiet --save '%s'",
             good_data(), tiny);
    ck_assert_msg(run_kfac(args) == 0, "%s", read_all(err_path, NULL));
}

typedef struct ckpt_case {
    const char *name;
    const char *problem;
    int eval; /* eval --load refuses it too (it reads theta only) */
} ckpt_case;

static const ckpt_case ckpt_cases[] = {
    {"truncated", "truncated checkpoint: ", 1},
    {"header-only", "truncated checkpoint: 20 bytes, not even a header", 1},
    {"empty", "not a libkfac checkpoint (no KFACCKPT magic)", 1},
    {"bit-flip", "corrupt checkpoint: checksum mismatch", 1},
    {"bad-crc", "corrupt checkpoint: checksum mismatch", 1},
    {"version", "checkpoint format version 4; this library reads versions 1 to 3", 1},
    {"magic", "not a libkfac checkpoint (no KFACCKPT magic)", 1},
    {"trailing", "corrupt checkpoint: 5 bytes after its end", 1},
    {"huge-payload", "truncated checkpoint: ", 1},
    {"other-network", "the checkpoint holds another network (49-16:tanh-10:linear softmax_xent loss pool 4)", 1},
    {"other-optimizer", "the checkpoint was written by optimizer momentum, this trainer uses adam", 0},
    {"directory", "cannot read: Is a directory", 1},
    {"dev-zero", "not a libkfac checkpoint", 1},
    {"missing", "cannot open: No such file or directory", 1},
};

START_TEST(test_bad_checkpoint)
{
    const ckpt_case *c = &ckpt_cases[_i];
    char dir[600], small[800], tiny[800], bad[800], log[800], args[4096];
    snprintf(dir, sizeof dir, "%s/bi-ckpt-%s", test_tmpdir(), c->name);
    make_checkpoints(dir, small, tiny, sizeof small);
    size_t n;
    char *buf = read_all(small, &n);
    buf = realloc(buf, n + 16);
    ck_assert(n > 1000);
    snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
    const char *extra = "";
    switch (_i) {
    case 0: n /= 2; break;
    case 1: n = 20; break;
    case 2: n = 0; break;
    case 3: buf[n / 2] ^= 0x04; break;
    case 4: buf[n - 2] ^= 0x80; break;
    case 5: buf[8] = 4; break;
    case 6: buf[0] = 'k'; break;
    case 7: memcpy(buf + n, "extra", 5), n += 5; break;
    case 8: buf[16 + 7] = 0x40; break; /* payload length 2^62 and more */
    case 9: break;
    case 10: extra = "--optimizer adam"; break;
    case 11: break;
    case 12: break;
    case 13: break;
    }
    if (_i == 9)
        snprintf(bad, sizeof bad, "%s", tiny);
    else if (_i == 11)
        snprintf(bad, sizeof bad, "%s", dir);
    else if (_i == 12)
        snprintf(bad, sizeof bad, "/dev/zero");
    else if (_i == 13)
        snprintf(bad, sizeof bad, "%s/none.ckpt", dir);
    else if (_i != 10)
        write_all(bad, buf, n);
    else
        snprintf(bad, sizeof bad, "%s", small);
    free(buf);

    /* --resume FILE --save FILE: the refused file stays as it was */
    size_t before_n = 0;
    char *before = exists(bad) && _i != 11 && _i != 12 ? read_all(bad, &before_n) : NULL;
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(args, sizeof args,
             "train nets/small.net --data '%s' --threads 1 --epochs 2 --batch 20 --quiet --resume '%s' --save '%s' "
             "--save-every 1 --log '%s' %s",
             good_data(), bad, _i == 11 || _i == 12 ? small : bad, log, extra);
    int got = run_kfac(args);
    expect_one_line(c->name, got, 3, bad, c->problem);
    ck_assert_msg(!exists(log), "%s: the log was created", c->name);
    ck_assert_msg(!tmp_files_in(dir), "%s: a temporary file was left", c->name);
    if (before) {
        size_t after_n;
        char *after = read_all(bad, &after_n);
        ck_assert_msg(after_n == before_n && memcmp(after, before, before_n) == 0, "%s: the file changed", c->name);
        free(after);
        free(before);
    }
    if (_i == 13)
        ck_assert_msg(!exists(bad), "%s: a checkpoint was created", c->name);
    if (c->eval) {
        snprintf(args, sizeof args, "eval nets/small.net --data '%s' --threads 1 --load '%s'", good_data(), bad);
        got = run_kfac(args);
        expect_one_line(c->name, got, 3, bad, c->problem);
    }
}
END_TEST

/* ---------------------------------------------------- resumed run logs */

/* `--resume --log` appends to the log only when it is this run's so far:
 * the header and exactly the checkpoint's epochs 1..E. Each case spoils
 * the log of a 2-epoch run; resuming to 4 epochs is refused with status 3
 * and one line naming the log and the problem, and the log and the
 * checkpoint stay as they were. */
typedef struct log_case {
    const char *name;
    const char *problem;
} log_case;

static const log_case log_cases[] = {
    {"header", "its first line is 'epoch,seconds,train_loss,test_loss,recon_err', not "
               "'epoch,seconds,train_loss,test_loss,test_acc'"},
    {"more-rows", "it has 3 epoch rows but the checkpoint "},
    {"fewer-rows", "it has 1 epoch row but the checkpoint "},
    {"numbering", "line 2, '2,"},
    {"fields", "has 4 fields, not 5"},
    {"incomplete", "its last line, line 3, is incomplete"},
    {"empty", "its first line is '', not 'epoch,"},
    {"directory", "cannot read the log to append to: Is a directory"},
};

START_TEST(test_resume_bad_log)
{
    const log_case *c = &log_cases[_i];
    char dir[600], log[800], ckpt[800], args[4096];
    snprintf(dir, sizeof dir, "%s/bi-log-%s", test_tmpdir(), c->name);
    mkdir_p(dir);
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    snprintf(args, sizeof args,
             "train nets/small.net --data '%s' --threads 1 --epochs 2 --batch 20 --quiet --log '%s' --save '%s'",
             good_data(), log, ckpt);
    ck_assert_msg(run_kfac(args) == 0, "%s", read_all(err_path, NULL));
    size_t n, ckpt_n;
    char *text = read_all(log, &n), *ckpt_before = read_all(ckpt, &ckpt_n);
    text = realloc(text, n + 64);
    char *row1 = strchr(text, '\n') + 1, *row2 = strchr(row1, '\n') + 1;
    switch (_i) {
    case 0: { /* the autoencoder's header */
        static const char ae[] = "epoch,seconds,train_loss,test_loss,recon_err\n";
        size_t rows = n - (size_t)(row1 - text);
        memmove(text + sizeof ae - 1, row1, rows);
        memcpy(text, ae, sizeof ae - 1);
        n = sizeof ae - 1 + rows;
        break;
    }
    case 1: memcpy(text + n, "3,0.1,0.5,0.5,0.8\n", 18), n += 18; break;
    case 2: n = (size_t)(row2 - text); break;
    case 3: { /* rows 2, 1 */
        size_t l1 = (size_t)(row2 - row1), l2 = n - (size_t)(row2 - text);
        char tmp[256];
        memcpy(tmp, row1, l1);
        memmove(row1, row2, l2);
        memcpy(row1 + l2, tmp, l1);
        break;
    }
    case 4: *strrchr(row2, ',') = ';'; break;
    case 5: n--; break;
    case 6: n = 0; break;
    case 7: break;
    }
    if (_i == 7) {
        snprintf(log, sizeof log, "%s/logdir", dir);
        mkdir_p(log);
    } else {
        write_all(log, text, n);
    }
    free(text);
    size_t before_n = 0;
    char *before = _i == 7 ? NULL : read_all(log, &before_n);
    snprintf(args, sizeof args,
             "train nets/small.net --data '%s' --threads 1 --epochs 4 --batch 20 --quiet --resume '%s' --save '%s' "
             "--save-every 1 --log '%s'",
             good_data(), ckpt, ckpt, log);
    int got = run_kfac(args);
    expect_one_line(c->name, got, 3, log, c->problem);
    if (before) {
        size_t after_n;
        char *after = read_all(log, &after_n);
        ck_assert_msg(after_n == before_n && memcmp(after, before, before_n) == 0, "%s: the log changed", c->name);
        free(after);
        free(before);
    }
    size_t now_n;
    char *now = read_all(ckpt, &now_n);
    ck_assert_msg(now_n == ckpt_n && memcmp(now, ckpt_before, ckpt_n) == 0, "%s: the checkpoint changed", c->name);
    free(now);
    free(ckpt_before);
    ck_assert_msg(!tmp_files_in(dir), "%s: a temporary file was left", c->name);
}
END_TEST

/* A resume to no more epochs than the checkpoint holds says so on stderr,
 * exits 0 and touches no file: the log (existing or not) and the
 * checkpoint it would save over. */
START_TEST(test_resume_nothing_to_do)
{
    char dir[600], log[800], missing[800], ckpt[800], args[4096];
    snprintf(dir, sizeof dir, "%s/bi-nothing", test_tmpdir());
    mkdir_p(dir);
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(missing, sizeof missing, "%s/none.csv", dir);
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    snprintf(args, sizeof args,
             "train nets/small.net --data '%s' --threads 1 --epochs 2 --batch 20 --quiet --log '%s' --save '%s'",
             good_data(), log, ckpt);
    ck_assert_msg(run_kfac(args) == 0, "%s", read_all(err_path, NULL));
    struct stat log_sb, ckpt_sb, sb;
    ck_assert_int_eq(stat(log, &log_sb), 0);
    ck_assert_int_eq(stat(ckpt, &ckpt_sb), 0);
    for (int epochs = 1; epochs <= 2; epochs++)
        for (int k = 0; k < 2; k++) {
            snprintf(args, sizeof args,
                     "train nets/small.net --data '%s' --threads 1 --epochs %d --batch 20 --resume '%s' --save '%s' "
                     "--log '%s'",
                     good_data(), epochs, ckpt, ckpt, k ? missing : log);
            int got = run_kfac(args);
            char *err = read_all(err_path, NULL);
            ck_assert_msg(got == 0, "--epochs %d: exit %d: %s", epochs, got, err);
            ck_assert_str_eq(err, "kfac: nothing to do: the checkpoint already has 2 epochs\n");
            free(err);
            ck_assert_msg(!exists(missing), "--epochs %d: the log was created", epochs);
            ck_assert_int_eq(stat(log, &sb), 0);
            ck_assert_msg(sb.st_ino == log_sb.st_ino && sb.st_mtime == log_sb.st_mtime && sb.st_size == log_sb.st_size,
                          "--epochs %d: the log was touched", epochs);
            ck_assert_int_eq(stat(ckpt, &sb), 0);
            ck_assert_msg(sb.st_ino == ckpt_sb.st_ino && sb.st_mtime == ckpt_sb.st_mtime,
                          "--epochs %d: the checkpoint was touched", epochs);
        }
    ck_assert_msg(!tmp_files_in(dir), "a temporary file was left");
}
END_TEST

/* ----------------------------------------------------------- divergence */

/* An absurd learning rate on a linear hidden layer (ReLU units would just
 * die): the resumed run stops with status 4 and one line; the checkpoint
 * it resumed from and saves over every epoch is the last good one, whole
 * (it loads, evaluates to finite figures, and training goes on from it);
 * the log holds whole lines only, and no temporary file is left. */
START_TEST(test_divergence_keeps_last_good)
{
    const char *opt = _i ? "momentum" : "sgd";
    char dir[600], net[800], ckpt[800], log[800], args[4000];
    snprintf(dir, sizeof dir, "%s/bi-diverge-%s", test_tmpdir(), opt);
    mkdir_p(dir);
    snprintf(net, sizeof net, "%s/linear.net", dir);
    const char *text = "[net]\ninputs = 784\n[dense]\nunits = 32\nactivation = linear\n"
                       "[dense]\nunits = 10\nactivation = linear\n[train]\nlr = 0.01\nbatch = 20\n";
    write_all(net, text, strlen(text));
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(args, sizeof args, "train '%s' --optimizer %s --data '%s' --threads 1 --epochs 1 --quiet --save '%s'", net,
             opt, good_data(), ckpt);
    ck_assert_msg(run_kfac(args) == 0, "%s", read_all(err_path, NULL));
    size_t good_n;
    char *good = read_all(ckpt, &good_n);

    snprintf(args, sizeof args,
             "train '%s' --optimizer %s --data '%s' --threads 1 --epochs 6 --lr 900 --quiet --resume '%s' --save '%s' "
             "--save-every 1 --log '%s'",
             net, opt, good_data(), ckpt, ckpt, log);
    int got = run_kfac(args);
    char *out = read_all(out_path, NULL);
    char *err = read_all(err_path, NULL);
    fprintf(stderr, "  %s, lr 900: %s", opt, err);
    free(err);
    expect_one_line("divergence", got, 4, "training diverged: ", NULL);
    /* the log: whole lines only, one per epoch printed */
    char *csv = read_all(log, NULL);
    ck_assert_msg(strncmp(csv, "epoch,seconds,train_loss,test_loss,test_acc\n", 44) == 0, "%s", csv);
    int epochs_logged = count_lines(csv) - 1, last = 1;
    for (const char *line = strchr(csv, '\n') + 1; *line; line = strchr(line, '\n') + 1) {
        double v[4];
        ck_assert_msg(sscanf(line, "%d,%lf,%lf,%lf,%lf", &last, &v[0], &v[1], &v[2], &v[3]) == 5, "log line: %s", line);
        ck_assert_msg(isfinite(v[1]) && isfinite(v[2]), "a non-finite epoch was logged: %s", csv);
    }
    ck_assert_msg(csv[strlen(csv) - 1] == '\n', "a partial line: %s", csv);
    free(csv);
    ck_assert_msg(!tmp_files_in(dir), "a temporary file was left");
    /* the checkpoint: the one resumed from if no epoch completed, else a
     * later one, saved after a finite epoch */
    size_t now_n;
    char *now = read_all(ckpt, &now_n);
    if (epochs_logged == 0)
        ck_assert_msg(now_n == good_n && memcmp(now, good, good_n) == 0, "the last good checkpoint changed");
    free(now);
    free(good);
    free(out);

    snprintf(args, sizeof args, "eval '%s' --data '%s' --threads 1 --load '%s'", net, good_data(), ckpt);
    ck_assert_msg(run_kfac(args) == 0, "%s", read_all(err_path, NULL));
    out = read_all(out_path, NULL);
    double loss = -1, acc = -1;
    const char *at = strstr(out, "test_loss ");
    ck_assert_msg(at && sscanf(at, "test_loss %lf test_acc %lf", &loss, &acc) == 2, "%s", out);
    ck_assert_msg(isfinite(loss) && loss > 0 && acc >= 0 && acc <= 1, "test loss %g, accuracy %g", loss, acc);
    free(out);
    /* and training goes on from it at a sane rate */
    snprintf(args, sizeof args, "train '%s' --optimizer %s --data '%s' --threads 1 --epochs 2 --quiet --resume '%s'",
             net, opt, good_data(), ckpt);
    ck_assert_msg(run_kfac(args) == 0, "%s", read_all(err_path, NULL));
}
END_TEST

/* All-zero images make every first-layer A singular (rank one: the
 * homogeneous coordinate); with damping 1e-10 K-FAC takes its fallbacks,
 * says so, and trains to finite figures (exit 0, no nan in the output). */
START_TEST(test_zero_images_tiny_damping)
{
    char dir[600], args[4096];
    snprintf(dir, sizeof dir, "%s/bi-zero", test_tmpdir());
    idx_file f[F_COUNT];
    make_good(f, 28, 28, 1);
    write_set(dir, f);
    snprintf(args, sizeof args,
             "train nets/small.net --data '%s' --threads 1 --epochs 2 --batch 20 --quiet --optimizer kfac "
             "--damping 1e-10 --cov-every 1 --inv-every 2 --inversion %s",
             dir, _i ? "eigen" : "cholesky");
    int got = run_kfac(args);
    char *out = read_all(out_path, NULL), *err = read_all(err_path, NULL);
    ck_assert_msg(got == 0, "exit %d: %s", got, err);
    ck_assert_msg(!strstr(out, "nan") && !strstr(out, "inf"), "non-finite figures: %s", out);
    ck_assert_msg(strstr(out, "\n    2 "), "epoch 2 missing: %s", out);
    if (!_i)
        ck_assert_msg(strstr(out, "(fallbacks:"), "no fallback reported: %s", out);
    free(out);
    free(err);
}
END_TEST

Suite *badinput_cli_suite(void)
{
    Suite *s = suite_create("badinput_cli");
    TCase *tc = tcase_create("data");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_bad_idx, 0, (int)(sizeof idx_cases / sizeof *idx_cases));
    tcase_add_loop_test(tc, test_bad_csv, 0, (int)(sizeof csv_cases / sizeof *csv_cases));
    tcase_add_test(tc, test_net_does_not_fit_data);
    suite_add_tcase(s, tc);
    tc = tcase_create("netfile");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_bad_netfile, 0, (int)(sizeof net_cases / sizeof *net_cases));
    suite_add_tcase(s, tc);
    tc = tcase_create("flags");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_bad_flag, 0, (int)(sizeof flag_cases / sizeof *flag_cases));
    tcase_add_test(tc, test_bad_flag_other_commands);
    tcase_add_test(tc, test_control_chars_in_names);
    tcase_add_test(tc, test_outputs_checked_first);
    tcase_add_test(tc, test_stdout_full);
    suite_add_tcase(s, tc);
    /* 21 one-epoch runs, each under `timeout 120` against a hang: the
     * case's own limit leaves room for a slow or shared machine */
    tc = tcase_create("threads");
    tcase_set_timeout(tc, 1200);
    tcase_add_test(tc, test_threads_capped);
    suite_add_tcase(s, tc);
    tc = tcase_create("checkpoints");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_bad_checkpoint, 0, (int)(sizeof ckpt_cases / sizeof *ckpt_cases));
    tcase_add_loop_test(tc, test_resume_bad_log, 0, (int)(sizeof log_cases / sizeof *log_cases));
    tcase_add_test(tc, test_resume_nothing_to_do);
    suite_add_tcase(s, tc);
    /* whole training runs (K-FAC eigendecompositions of 785 x 785 factors):
     * left out under valgrind, run everywhere else */
    tc = tcase_create("numeric");
    tcase_set_tags(tc, "training");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_divergence_keeps_last_good, 0, 2);
    tcase_add_loop_test(tc, test_zero_images_tiny_damping, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
