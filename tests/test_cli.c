/* test_cli.c - the kfac program as a user meets it: help texts, one clear
 * line and the documented exit status for every kind of bad command line
 * or input, and a real run whose CSV log is complete and atomic. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "kfac.h"
#include "tests.h"

static char out_path[512], err_path[512];

/* Run `PREFIX kfac ARGS` from the project root (PREFIX: `env ...`, say);
 * returns the exit status and leaves stdout/stderr in out_path/err_path. */
static int run_kfac_env(const char *prefix, const char *args)
{
    snprintf(out_path, sizeof out_path, "%s/cli.out", test_tmpdir());
    snprintf(err_path, sizeof err_path, "%s/cli.err", test_tmpdir());
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && %s '%s' %s >'%s' 2>'%s' </dev/null", test_root(), prefix,
             test_kfac_bin(), args, out_path, err_path);
    int st = system(cmd);
    ck_assert_msg(st != -1 && WIFEXITED(st), "could not run: %s", cmd);
    return WEXITSTATUS(st);
}

static int run_kfac(const char *args) { return run_kfac_env("", args); }

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* stderr is exactly one line that contains `what` */
static void expect_error(const char *args, int status, const char *what)
{
    int got = run_kfac(args);
    char *err = test_slurp(err_path);
    ck_assert_msg(got == status, "kfac %s: exit %d, expected %d; stderr: %s", args, got, status, err);
    ck_assert_msg(strstr(err, what) != NULL, "kfac %s: stderr lacks '%s': %s", args, what, err);
    ck_assert_msg(count_lines(err) == 1, "kfac %s: expected one line on stderr, got: %s", args, err);
}

static const char *small_data(void)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/small", test_tmpdir());
    test_write_mnist(dir, 400, 3);
    return dir;
}

START_TEST(test_help)
{
    ck_assert_int_eq(run_kfac("--help"), 0);
    ck_assert_ptr_nonnull(strstr(test_slurp(out_path), "train NETFILE"));
    ck_assert_int_eq(run_kfac("train --help"), 0);
    const char *out = test_slurp(out_path);
    const char *flags[] = {"--data",    "--optimizer", "--epochs", "--batch",  "--lr",
                           "--seed",    "--threads",   "--log",    "--save",   "--save-every",
                           "--resume"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        ck_assert_msg(strstr(out, flags[i]) != NULL, "train --help lacks %s", flags[i]);
    ck_assert_int_eq(run_kfac(""), 2);
    expect_error("frobnicate", 2, "unknown command 'frobnicate'");
    /* the library's version, which the header's numbers make */
    ck_assert_int_eq(run_kfac("--version"), 0);
    char version[128];
    snprintf(version, sizeof version, "kfac %s\n", kfac_version());
    ck_assert_str_eq(test_slurp(out_path), version);
    snprintf(version, sizeof version, "%d.%d.%d", KFAC_VERSION_MAJOR, KFAC_VERSION_MINOR, KFAC_VERSION_PATCH);
    ck_assert_str_eq(kfac_version(), version);
}
END_TEST

START_TEST(test_bad_flags)
{
    expect_error("train nets/small.net --frobnicate 3", 2, "--frobnicate");
    expect_error("train nets/small.net --lr", 2, "--lr needs a value");
    expect_error("train nets/small.net --lr -1", 2, "--lr");
    expect_error("train nets/small.net --lr abc", 2, "--lr 'abc'");
    expect_error("train nets/small.net --lr=5000", 2, "train.lr = 5000 is outside (0, 1000]");
    expect_error("train nets/small.net --batch 0", 2, "--batch");
    expect_error("train nets/small.net --epochs 2x", 2, "--epochs");
    expect_error("train nets/small.net --threads 0", 2, "--threads");
    expect_error("train nets/small.net --momentum 1", 2, "momentum");
    expect_error("train nets/small.net --optimizer lbfgs", 2, "lbfgs");
    expect_error("train", 2, "no NETFILE");
    expect_error("train nets/small.net nets/small.net", 2, "one NETFILE");
}
END_TEST

START_TEST(test_kfac_flags)
{
    ck_assert_int_eq(run_kfac("train --help"), 0);
    const char *out = test_slurp(out_path);
    const char *flags[] = {"--damping", "--decay", "--cov-every", "--inv-every", "--stat-fraction", "--fisher",
                           "--inversion", "--rule", "--kl-clip", "--lm-every", "--kfac-lr", "[0.1]", "[100]"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        ck_assert_msg(strstr(out, flags[i]) != NULL, "train --help lacks %s", flags[i]);
    expect_error("train nets/small.net --optimizer kfac --damping 0", 2, "damping = 0 is outside");
    expect_error("train nets/small.net --fisher exact", 2, "unknown Fisher kind 'exact'");
    expect_error("train nets/small.net --inversion lu", 2, "--inversion 'lu'");
    expect_error("train nets/small.net --rule newton", 2, "unknown step rule");
    expect_error("train nets/small.net --stat-fraction 0", 2, "stat_fraction");
    expect_error("train nets/small.net --inv-every -3", 2, "--inv-every");
    expect_error("compare nets/small.net --optimizers kfac,lbfgs", 2, "unknown optimizer 'lbfgs'");
    expect_error("compare nets/small.net --optimizer kfac", 2, "unknown option '--optimizer'");
    expect_error("check nets/small.net --examples 0", 2, "--examples");
    expect_error("check", 2, "no NETFILE");
}
END_TEST

/* compare: both optimizers trained on the same data, a table side by side,
 * one log per optimizer */
/* Each optimizer at its own settings: a net file's [adam] section, and
 * compare's NAME:key=value, apply to that optimizer alone; a flag wins
 * over every section; and compare prints each one's learning rate. */
START_TEST(test_per_optimizer_settings)
{
    const char *data = small_data();
    char net[600], args[2048];
    snprintf(net, sizeof net, "%s/own.net", test_tmpdir());
    FILE *f = fopen(net, "w");
    ck_assert_ptr_nonnull(f);
    char small[600];
    snprintf(small, sizeof small, "%s/nets/small.net", test_root());
    fputs(test_slurp(small), f);
    fputs("\n[adam]\nlr = 0.002\nbeta2 = 0.99\n\n[sgd]\nlr = 0.2\n", f);
    fclose(f);
    snprintf(args, sizeof args,
             "compare '%s' --data '%s' --epochs 1 --batch 20 --threads 1 --optimizers adam,sgd:lr=0.3,momentum,nesterov:lr=0.07:momentum=0.8",
             net, data);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    const char *out = test_slurp(out_path);
    ck_assert_msg(strstr(out, "# adam lr 0.002 beta1 0.9 beta2 0.99"), "%s", out);
    ck_assert_msg(strstr(out, "# sgd lr 0.3,"), "%s", out);          /* the command line over [sgd] */
    ck_assert_msg(strstr(out, "# momentum lr 0.05 momentum 0.9,"), "%s", out); /* [train]'s */
    ck_assert_msg(strstr(out, "# nesterov lr 0.07 momentum 0.8,"), "%s", out);
    const char *table = strstr(out, "# side by side");
    ck_assert_ptr_nonnull(table);
    ck_assert_msg(strstr(table, "adam lr 0.002") && strstr(table, "sgd lr 0.3") && strstr(table, "momentum lr 0.05"),
                  "%s", table);
    /* train: [adam]'s, unless a flag says otherwise */
    snprintf(args, sizeof args, "train '%s' --data '%s' --epochs 1 --batch 20 --threads 1 --optimizer adam", net, data);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    ck_assert_msg(strstr(test_slurp(out_path), "# adam lr 0.002 "), "%s", test_slurp(out_path));
    snprintf(args, sizeof args, "train '%s' --data '%s' --epochs 1 --batch 20 --threads 1 --optimizer adam --lr 0.004",
             net, data);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    ck_assert_msg(strstr(test_slurp(out_path), "# adam lr 0.004 beta1 0.9 beta2 0.99"), "%s", test_slurp(out_path));
    /* what compare refuses */
    snprintf(args, sizeof args, "compare nets/small.net --data '%s' --optimizers adam:lr", data);
    expect_error(args, 2, "adam:lr': lr: expected key=value");
    snprintf(args, sizeof args, "compare nets/small.net --data '%s' --optimizers adam:lr=7e9", data);
    expect_error(args, 2, "adam.lr = 7e9 is outside (0, 1000]");
    snprintf(args, sizeof args, "compare nets/small.net --data '%s' --optimizers sgd:damping=1", data);
    expect_error(args, 2, "unknown parameter 'sgd.damping'");
}
END_TEST

/* examples/csv/run.sh, as a user runs it: three Fashion-MNIST classes as
 * a CSV directory, trained from its net file's label column, validation
 * split and early stop */
START_TEST(test_csv_example)
{
    char args[2048], dir[600], log[700];
    snprintf(dir, sizeof dir, "%s/csv-example", test_tmpdir());
    snprintf(out_path, sizeof out_path, "%s/csv.out", test_tmpdir());
    snprintf(err_path, sizeof err_path, "%s/csv.err", test_tmpdir());
    snprintf(args, sizeof args, "cd '%s' && examples/csv/run.sh '%s' '%s' '%s' >'%s' 2>'%s'", test_root(),
             test_kfac_bin(), test_data_dir(), dir, out_path, err_path);
    int st = system(args);
    ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", test_slurp(err_path));
    const char *out = test_slurp(out_path);
    ck_assert_msg(strstr(out, "validation examples (the last 0.1 of the training set), 999 test examples"), "%s",
                  out);
    snprintf(log, sizeof log, "%s/run.csv", dir);
    const char *csv = test_slurp(log);
    ck_assert_msg(!strncmp(csv, "epoch,seconds,train_loss,test_loss,test_acc,val_loss,val_acc\n", 60), "%s", csv);
    /* the last row's test accuracy: well past the 1/3 of chance */
    const char *last = csv + strlen(csv) - 1;
    while (last > csv && last[-1] != '\n')
        last--;
    double acc = 0;
    ck_assert_int_eq(sscanf(last, "%*d,%*f,%*f,%*f,%lf", &acc), 1);
    ck_assert_msg(acc > 0.9, "test accuracy %g: %s", acc, csv);
}
END_TEST

START_TEST(test_compare)
{
    const char *data = small_data();
    char args[2048], log[600];
    snprintf(log, sizeof log, "%s/cmp.csv", test_tmpdir());
    snprintf(args, sizeof args,
             "compare nets/small.net --data '%s' --epochs 2 --batch 20 --threads 1 --optimizers kfac,sgd --log '%s'",
             data, log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    const char *out = test_slurp(out_path);
    ck_assert_ptr_nonnull(strstr(out, "# side by side"));
    ck_assert_ptr_nonnull(strstr(out, "# kfac:"));
    const char *table = strstr(out, "# side by side");
    ck_assert_ptr_nonnull(strstr(table, "kfac"));
    ck_assert_ptr_nonnull(strstr(table, "sgd"));
    ck_assert_int_eq(count_lines(table), 5); /* title, names, header, 2 epochs */
    for (int k = 0; k < 2; k++) {
        snprintf(log, sizeof log, "%s/cmp-%s.csv", test_tmpdir(), k ? "sgd" : "kfac");
        ck_assert_int_eq(count_lines(test_slurp(log)), 3);
    }
}
END_TEST

/* check: on nets/tiny.net and the real data every measurement passes; a
 * network too large for an explicit Fisher is checked by CG alone */
START_TEST(test_check)
{
    char args[1024];
    /* rank_max 8: tiny.net's first A (50 x 50) is a rank-8 inverse */
    snprintf(args, sizeof args, "check nets/tiny.net --data '%s' --examples 500 --rank-max 8", test_data_dir());
    int status = run_kfac(args);
    const char *out = test_slurp(out_path);
    ck_assert_msg(status == 0, "exit %d: %s%s", status, out, test_slurp(err_path));
    ck_assert_ptr_nonnull(strstr(out, "cosine(K-FAC, exact natural gradient)"));
    ck_assert_ptr_null(strstr(out, "FAIL"));
    /* the low-rank inverse's direction is as good as the dense one's */
    const char *chol = strstr(out, "cholesky inverses"), *lr = strstr(out, "lowrank  inverses");
    double c_chol = 0, c_lr = 0;
    ck_assert_msg(chol && lr && sscanf(chol + 17, "%lf", &c_chol) == 1 && sscanf(lr + 17, "%lf", &c_lr) == 1, "%s", out);
    ck_assert_ptr_nonnull(strstr(lr, "ranks of A^-1, G^-1: 8,"));
    ck_assert_msg(c_chol > 0.5 && fabs(c_lr - c_chol) <= 0.02, "cosines: cholesky %g, lowrank %g", c_chol, c_lr);
    ck_assert_ptr_nonnull(strstr(out, "Cholesky of the explicit F; CG"));
    /* above 20000 parameters: CG on R-op products alone */
    snprintf(args, sizeof args, "check nets/small.net --data '%s' --examples 300 --cg-tol 1e-3", test_data_dir());
    status = run_kfac(args);
    out = test_slurp(out_path);
    ck_assert_msg(status == 0, "exit %d: %s%s", status, out, test_slurp(err_path));
    ck_assert_ptr_nonnull(strstr(out, "25450 parameters"));
    ck_assert_ptr_nonnull(strstr(out, "CG on R-op products"));
    ck_assert_ptr_nonnull(strstr(out, "not run (no explicit F"));
    ck_assert_ptr_null(strstr(out, "FAIL"));
    /* CG cut short fails the check (exit 5), and says so */
    snprintf(args, sizeof args, "check nets/small.net --data '%s' --examples 300 --cg-max-iter 1", test_data_dir());
    status = run_kfac(args);
    ck_assert_int_eq(status, 5);
    ck_assert_ptr_nonnull(strstr(test_slurp(out_path), "1 iterations"));
    snprintf(args, sizeof args, "check nets/small.net --data '%s' --cg-tol 2", test_data_dir());
    expect_error(args, 2, "--cg-tol");
}
END_TEST

START_TEST(test_bad_inputs)
{
    char args[1024], net[600];
    expect_error("train nets/no-such.net", 3, "nets/no-such.net");
    snprintf(net, sizeof net, "%s/bad.net", test_tmpdir());
    FILE *f = fopen(net, "w");
    fputs("[net]\ninputs = 784\n\n[dense]\nunits = ten\n", f);
    fclose(f);
    snprintf(args, sizeof args, "train '%s'", net);
    expect_error(args, 3, "bad.net:5:");
    snprintf(args, sizeof args, "train nets/small.net --data '%s/nowhere'", test_tmpdir());
    expect_error(args, 3, "nowhere");
    snprintf(args, sizeof args, "train nets/small.net --data '%s' --batch 500", small_data());
    expect_error(args, 2, "larger than the training set");
}
END_TEST

/* A real (small) run: one line per epoch on stdout, a complete CSV log, no
 * temporary files left beside it. */
START_TEST(test_run_and_log)
{
    const char *data = small_data();
    char args[2048], log[600];
    snprintf(log, sizeof log, "%s/logs/run.csv", test_tmpdir());
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/logs'", test_tmpdir());
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "train nets/small.net --data '%s' --epochs 3 --batch 20 --threads 1 --log '%s'",
             data, log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    const char *out = test_slurp(out_path);
    ck_assert_ptr_nonnull(strstr(out, "test_acc"));
    char *csv = test_slurp(log);
    ck_assert_msg(strncmp(csv, "epoch,seconds,train_loss,test_loss,test_acc\n", 44) == 0, "header: %s", csv);
    ck_assert_int_eq(count_lines(csv), 4);
    int epoch = 0;
    double secs, tl, vl, acc = 0, prev_secs = 0;
    char *line = strchr(csv, '\n') + 1;
    for (int e = 1; e <= 3; e++) {
        ck_assert_int_eq(sscanf(line, "%d,%lf,%lf,%lf,%lf", &epoch, &secs, &tl, &vl, &acc), 5);
        ck_assert_int_eq(epoch, e);
        /* cumulative training time: never decreasing, but an epoch of
         * small.net can take less than the log's millisecond resolution */
        ck_assert_msg(secs >= prev_secs, "epoch %d: %g s after %g s", e, secs, prev_secs);
        prev_secs = secs;
        line = strchr(line, '\n') + 1;
    }
    ck_assert_msg(acc > 0.5, "the bright-row data is easy: accuracy %g", acc);
    snprintf(cmd, sizeof cmd, "test $(ls '%s/logs' | wc -l) -eq 1", test_tmpdir());
    ck_assert_msg(system(cmd) == 0, "temporary files left beside the log");
    /* a log that cannot be written fails before training, leaving nothing */
    snprintf(args, sizeof args, "train nets/small.net --data '%s' --log '%s/missing/dir/run.csv'", data,
             test_tmpdir());
    expect_error(args, 1, "missing/dir/run.csv");
}
END_TEST

/* The autoencoder's last column is its reconstruction error: named
 * recon_err on stdout, in train's log and in each of compare's logs. */
START_TEST(test_autoencoder_log)
{
    const char *data = small_data();
    char net[600], log[600], args[2048];
    snprintf(net, sizeof net, "%s/ae.net", test_tmpdir());
    FILE *f = fopen(net, "w");
    ck_assert_ptr_nonnull(f);
    fputs("[net]\ninputs = 784\nloss = sigmoid_xent\n[dense]\nunits = 8\nactivation = sigmoid\n"
          "[dense]\nunits = 784\nactivation = linear\n[train]\nbatch = 20\nepochs = 1\n",
          f);
    fclose(f);
    static const char header[] = "epoch,seconds,train_loss,test_loss,recon_err\n";
    snprintf(log, sizeof log, "%s/ae.csv", test_tmpdir());
    snprintf(args, sizeof args, "train '%s' --data '%s' --threads 1 --quiet --log '%s'", net, data, log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    ck_assert_ptr_nonnull(strstr(test_slurp(out_path), " recon_err\n"));
    const char *csv = test_slurp(log);
    ck_assert_msg(strncmp(csv, header, strlen(header)) == 0, "header: %s", csv);
    ck_assert_int_eq(count_lines(csv), 2);
    snprintf(args, sizeof args, "compare '%s' --data '%s' --threads 1 --quiet --optimizers sgd,adam --log '%s'", net,
             data, log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    for (int k = 0; k < 2; k++) {
        snprintf(log, sizeof log, "%s/ae-%s.csv", test_tmpdir(), k ? "adam" : "sgd");
        csv = test_slurp(log);
        ck_assert_msg(strncmp(csv, header, strlen(header)) == 0, "%s: header: %s", log, csv);
        ck_assert_int_eq(count_lines(csv), 2);
    }
}
END_TEST

/* Counts agree with their nouns: "1 epoch", "2 epochs", "1 thread",
 * statistics on the whole batch or a fraction of it. */
START_TEST(test_plurals)
{
    static const struct {
        const char *cmd, *flags, *has[3];
    } runs[] = {
        {"train", "--optimizer kfac --epochs 1 --threads 1",
         {", 1 epoch, ", ", 1 thread", "statistics on the whole batch,"}},
        {"train", "--optimizer kfac --epochs 2 --threads 2 --stat-fraction 0.5",
         {", 2 epochs, ", ", 2 threads", "statistics on 0.5 of the batch,"}},
        {"compare", "--epochs 1 --threads 1 --optimizers kfac,sgd", {", 1 epoch, ", ", 1 thread\n", NULL}},
    };
    const char *data = small_data();
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        char args[1024];
        snprintf(args, sizeof args, "%s nets/small.net --data '%s' --batch 20 --quiet %s", runs[i].cmd, data,
                 runs[i].flags);
        ck_assert_msg(run_kfac(args) == 0, "%s: %s", args, test_slurp(err_path));
        const char *out = test_slurp(out_path);
        for (int k = 0; k < 3 && runs[i].has[k]; k++)
            ck_assert_msg(strstr(out, runs[i].has[k]), "%s: lacks '%s':\n%s", args, runs[i].has[k], out);
        ck_assert_msg(!strstr(out, " 1 epochs") && !strstr(out, " 1 threads") && !strstr(out, " 1 of the batch"),
                      "%s: a singular count with a plural noun:\n%s", args, out);
    }
}
END_TEST

/* The log and the checkpoint get the mode open() would give them under
 * the user's umask (mkstemp alone makes 0600). */
START_TEST(test_output_modes)
{
    static const struct {
        const char *umask;
        mode_t mode;
    } runs[] = {{"umask 022;", 0644}, {"umask 077;", 0600}};
    const char *data = small_data();
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        char args[2048], log[600], ckpt[600];
        snprintf(log, sizeof log, "%s/mode%zu.csv", test_tmpdir(), i);
        snprintf(ckpt, sizeof ckpt, "%s/mode%zu.ckpt", test_tmpdir(), i);
        snprintf(args, sizeof args,
                 "train nets/small.net --data '%s' --epochs 1 --batch 20 --threads 1 --quiet --log '%s' --save '%s'",
                 data, log, ckpt);
        ck_assert_msg(run_kfac_env(runs[i].umask, args) == 0, "%s", test_slurp(err_path));
        const char *files[2] = {log, ckpt};
        for (int k = 0; k < 2; k++) {
            struct stat sb;
            ck_assert_int_eq(stat(files[k], &sb), 0);
            ck_assert_msg((sb.st_mode & 0777) == runs[i].mode, "%s %s: mode %03o, expected %03o", runs[i].umask,
                          files[k], (unsigned)(sb.st_mode & 0777), (unsigned)runs[i].mode);
        }
    }
}
END_TEST

/* A copy of the CSV log without its seconds column (training time, which
 * differs from run to run). */
static char *without_seconds(const char *csv)
{
    char *out = malloc(strlen(csv) + 1), *o = out;
    ck_assert_ptr_nonnull(out);
    for (const char *line = csv; *line;) {
        const char *comma = strchr(line, ','), *next = comma ? strchr(comma + 1, ',') : NULL;
        const char *nl = strchr(line, '\n');
        ck_assert_msg(comma && next && nl && next < nl, "not a log row: %s", line);
        memcpy(o, line, (size_t)(comma - line)), o += comma - line;
        memcpy(o, next, (size_t)(nl + 1 - next)), o += nl + 1 - next;
        line = nl + 1;
    }
    *o = '\0';
    return out;
}

/* --resume with --log appends the new epochs: 1 epoch, then resumed to 3,
 * logs what 3 straight epochs log (but for the seconds); a log that does
 * not exist yet starts with the new epochs. */
START_TEST(test_resume_appends_log)
{
    const char *data = small_data();
    char args[4096], straight[600], resumed[600], fresh[600], ckpt[600], ckpt2[600];
    snprintf(straight, sizeof straight, "%s/straight.csv", test_tmpdir());
    snprintf(resumed, sizeof resumed, "%s/resumed.csv", test_tmpdir());
    snprintf(fresh, sizeof fresh, "%s/fresh.csv", test_tmpdir());
    snprintf(ckpt, sizeof ckpt, "%s/append.ckpt", test_tmpdir());
    snprintf(ckpt2, sizeof ckpt2, "%s/append2.ckpt", test_tmpdir());
    static const char common[] = "train nets/small.net --batch 20 --threads 1 --quiet";
    snprintf(args, sizeof args, "%s --data '%s' --epochs 3 --log '%s'", common, data, straight);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    char *want = without_seconds(test_slurp(straight));
    snprintf(args, sizeof args, "%s --data '%s' --epochs 1 --log '%s' --save '%s'", common, data, resumed, ckpt);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    snprintf(args, sizeof args, "cp '%s' '%s'", ckpt, ckpt2);
    ck_assert_int_eq(system(args), 0);
    snprintf(args, sizeof args, "%s --data '%s' --epochs 3 --resume '%s' --save '%s' --log '%s'", common, data, ckpt,
             ckpt, resumed);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    char *got = without_seconds(test_slurp(resumed));
    ck_assert_msg(strcmp(got, want) == 0, "resumed log:\n%s\nstraight:\n%s", got, want);
    free(got);
    /* no log yet: the header and epochs 2 and 3 */
    snprintf(args, sizeof args, "%s --data '%s' --epochs 3 --resume '%s' --log '%s'", common, data, ckpt2, fresh);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    got = without_seconds(test_slurp(fresh));
    const char *row2 = strchr(strchr(want, '\n') + 1, '\n') + 1;
    ck_assert_msg(strncmp(got, want, (size_t)(strchr(want, '\n') + 1 - want)) == 0 &&
                      strcmp(strchr(got, '\n') + 1, row2) == 0,
                  "new log:\n%s\nexpected the header and:\n%s", got, row2);
    free(got);
    free(want);
}
END_TEST

/* --beta1, --beta2 and --eps reach Adam: each changes its log (but for
 * the seconds), the defaults given as flags change nothing, the header
 * names them, and --help lists them. */
START_TEST(test_adam_flags)
{
    const char *data = small_data();
    static const char *const flags[] = {"", "--beta1 0.9 --beta2 0.999 --eps 1e-8", "--beta1 0.5", "--beta2 0.9",
                                        "--eps 0.1"};
    char *logs[5];
    for (int k = 0; k < 5; k++) {
        char args[2048], log[600];
        snprintf(log, sizeof log, "%s/adam%d.csv", test_tmpdir(), k);
        snprintf(args, sizeof args,
                 "train nets/small.net --data '%s' --optimizer adam --lr 0.01 --epochs 1 --batch 20 --threads 1 "
                 "--quiet --log '%s' %s",
                 data, log, flags[k]);
        ck_assert_msg(run_kfac(args) == 0, "%s: %s", args, test_slurp(err_path));
        if (k == 4)
            ck_assert_msg(strstr(test_slurp(out_path), "# adam lr 0.01 beta1 0.9 beta2 0.999 eps 0.1,"), "%s",
                          test_slurp(out_path));
        logs[k] = without_seconds(test_slurp(log));
    }
    ck_assert_msg(strcmp(logs[0], logs[1]) == 0, "the defaults as flags changed the run:\n%s\n%s", logs[0], logs[1]);
    for (int k = 2; k < 5; k++)
        ck_assert_msg(strcmp(logs[0], logs[k]) != 0, "%s did not change Adam's run:\n%s", flags[k], logs[k]);
    for (int k = 0; k < 5; k++)
        free(logs[k]);
    ck_assert_int_eq(run_kfac("train --help"), 0);
    const char *help = test_slurp(out_path);
    ck_assert_msg(strstr(help, "--beta1 X") && strstr(help, "--beta2 X") && strstr(help, "--eps X"), "%s", help);
}
END_TEST

/* The test_loss line of `kfac eval` */
static void eval_line(const char *data, const char *ckpt, char *line, size_t cap)
{
    char args[1024];
    snprintf(args, sizeof args, "eval nets/tiny.net --data '%s' --load '%s' --threads 1", data, ckpt);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    const char *at = strstr(test_slurp(out_path), "test_loss ");
    ck_assert_ptr_nonnull(at);
    snprintf(line, cap, "%.*s", (int)strcspn(at, "\n"), at);
}

/* --save, --resume and eval: 2 epochs of K-FAC straight and 1 + resumed 1
 * evaluate to the same figures; bad checkpoints are one line and exit 3. */
START_TEST(test_checkpoints)
{
    const char *data = small_data();
    char a[600], b[600], bad[600], args[2048], line_a[256], line_b[256];
    snprintf(a, sizeof a, "%s/straight.ckpt", test_tmpdir());
    snprintf(b, sizeof b, "%s/resumed.ckpt", test_tmpdir());
    snprintf(bad, sizeof bad, "%s/garbage.ckpt", test_tmpdir());
    snprintf(args, sizeof args, "train nets/tiny.net --data '%s' --epochs 2 --threads 1 --save '%s'", data, a);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    snprintf(args, sizeof args, "train nets/tiny.net --data '%s' --epochs 1 --threads 1 --save '%s'", data, b);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    snprintf(args, sizeof args, "train nets/tiny.net --data '%s' --epochs 2 --threads 1 --resume '%s' --save '%s'",
             data, b, b);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    const char *out = test_slurp(out_path);
    ck_assert_msg(strstr(out, "resumed from") && strstr(out, "after epoch 1"), "%s", out);
    ck_assert_msg(!strstr(out, "\n    1 ") && strstr(out, "\n    2 "), "only epoch 2 runs: %s", out);
    eval_line(data, a, line_a, sizeof line_a);
    eval_line(data, b, line_b, sizeof line_b);
    ck_assert_msg(strcmp(line_a, line_b) == 0, "straight '%s' vs resumed '%s'", line_a, line_b);

    FILE *f = fopen(bad, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("not a checkpoint at all", f);
    fclose(f);
    snprintf(args, sizeof args, "eval nets/tiny.net --data '%s' --load '%s'", data, bad);
    expect_error(args, 3, "garbage.ckpt: not a libkfac checkpoint");
    snprintf(args, sizeof args, "train nets/tiny.net --data '%s' --resume '%s'", data, bad);
    expect_error(args, 3, "garbage.ckpt");
    snprintf(args, sizeof args, "train nets/small.net --data '%s' --optimizer kfac --resume '%s'", data, a);
    expect_error(args, 3, "another network");
    snprintf(args, sizeof args, "train nets/tiny.net --data '%s' --optimizer momentum --resume '%s'", data, a);
    expect_error(args, 3, "optimizer kfac");
    snprintf(args, sizeof args, "eval nets/small.net --data '%s' --load '%s'", data, a);
    expect_error(args, 3, "another network");
    snprintf(args, sizeof args, "eval nets/tiny.net --data '%s' --load '%s/none.ckpt'", data, test_tmpdir());
    expect_error(args, 3, "none.ckpt: cannot open");
    expect_error("eval nets/tiny.net", 2, "--load FILE is required");
    expect_error("train nets/tiny.net --save-every 2", 2, "--save-every needs --save");
    expect_error("compare nets/tiny.net --save x.ckpt", 2, "unknown option '--save'");
    snprintf(args, sizeof args, "train nets/tiny.net --data '%s' --epochs 1 --save '%s/no/dir/x.ckpt'", data,
             test_tmpdir());
    expect_error(args, 1, "no/dir/x.ckpt");
}
END_TEST

/* The program bounds libgomp's spin-waiting (src/cli/main.c): with neither
 * GOMP_SPINCOUNT nor OMP_WAIT_POLICY set it runs itself again, exactly
 * once, with GOMP_SPINCOUNT=3000, and libgomp reads that value; a policy
 * the user set is kept and the program runs once. libgomp's
 * OMP_DISPLAY_ENV report, printed as it loads, shows each image and what
 * it read. The training header names the policy in effect. */
START_TEST(test_spin_wait_bounded)
{
    static const struct {
        const char *env, *libgomp_read, *header;
        int images;
    } runs[] = {
        {"-u GOMP_SPINCOUNT -u OMP_WAIT_POLICY", "GOMP_SPINCOUNT = '3000'", "1 thread (GOMP_SPINCOUNT=3000)\n", 2},
        {"-u OMP_WAIT_POLICY GOMP_SPINCOUNT=77", "GOMP_SPINCOUNT = '77'", "1 thread (GOMP_SPINCOUNT=77)\n", 1},
        {"-u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive", "GOMP_SPINCOUNT = '0'", "1 thread (OMP_WAIT_POLICY=passive)\n",
         1},
    };
    const char *data = small_data();
    char version[128];
    snprintf(version, sizeof version, "kfac %s\n", kfac_version());
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        char env[256], args[1024];
        /* the timeout stops a loop of re-executions */
        snprintf(env, sizeof env, "timeout 300 env %s OMP_DISPLAY_ENV=verbose", runs[i].env);
        ck_assert_int_eq(run_kfac_env(env, "--version"), 0);
        ck_assert_msg(strcmp(test_slurp(out_path), version) == 0, "%s", test_slurp(out_path));
        const char *err = test_slurp(err_path), *last = NULL;
        int images = 0;
        for (const char *at = err; (at = strstr(at, "OPENMP DISPLAY ENVIRONMENT BEGIN")) != NULL; at++)
            images++, last = at;
        ck_assert_msg(images == runs[i].images, "env %s: %d program images, expected %d:\n%.3000s", runs[i].env,
                      images, runs[i].images, err);
        ck_assert_msg(strstr(last, runs[i].libgomp_read), "env %s: libgomp lacks %s:\n%s", runs[i].env,
                      runs[i].libgomp_read, last);

        snprintf(args, sizeof args, "train nets/tiny.net --data '%s' --epochs 1 --batch 50 --threads 1 --quiet", data);
        snprintf(env, sizeof env, "env %s", runs[i].env);
        ck_assert_msg(run_kfac_env(env, args) == 0, "%s", test_slurp(err_path));
        const char *out = test_slurp(out_path);
        ck_assert_msg(strstr(out, runs[i].header), "env %s: the header lacks '%s':\n%s", runs[i].env, runs[i].header,
                      out);
    }
}
END_TEST


/* ------------------------------------------------------ your own data */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* A CSV file of n rows of 4 features around the class (a header, the label
 * in column 3 of 5); rows from `flip` on have their label moved by one
 * (a validation set that contradicts the training set). */
static void write_csv(const char *path, int n, int classes, int flip, uint64_t seed)
{
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("x1,x2,class,x3,x4\n", f);
    for (int i = 0; i < n; i++) {
        int c = (int)kfac_rng_below(&r, (uint32_t)classes), lab = i >= flip ? (c + 1) % classes : c;
        double v[4];
        for (int k = 0; k < 4; k++)
            v[k] = (k == c % 4 ? 1.0 : 0.0) + (c / 4) * 0.5 + 0.2 * (kfac_rng_uniform(&r) - 0.5);
        fprintf(f, "%.4f,%.4f,%d,%.4f,%.4f\n", v[0], v[1], lab, v[2], v[3]);
    }
    ck_assert_int_eq(fclose(f), 0);
}

/* The last row's last field of a CSV log. */
static double last_field(const char *csv)
{
    const char *end = csv + strlen(csv) - 1, *p = end;
    while (p > csv && p[-1] != ',')
        p--;
    return atof(p);
}

/* A 3-class problem (CSV: train.csv and test.csv, the label in column 3)
 * and a 26-class one (IDX: float features of 2 dimensions, short labels)
 * train through the program: the classes are the network's outputs. A
 * label past them names the file, line and index. */
START_TEST(test_own_classes)
{
    char dir[600], path[800], net[800], log[800], args[4096];
    snprintf(dir, sizeof dir, "%s/three", test_tmpdir());
    snprintf(args, sizeof args, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(args), 0);
    snprintf(path, sizeof path, "%s/train.csv", dir);
    write_csv(path, 300, 3, 1 << 30, 1);
    snprintf(path, sizeof path, "%s/test.csv", dir);
    write_csv(path, 60, 3, 1 << 30, 2);
    snprintf(net, sizeof net, "%s/three.net", dir);
    write_file(net, "[net]\ninputs = 4\n[dense]\nunits = 8\nactivation = tanh\n[dense]\nunits = 3\n"
                    "activation = linear\n[train]\nbatch = 20\nepochs = 5\nlr = 0.1\n");
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(args, sizeof args, "train '%s' --data '%s' --label-column 3 --threads 1 --quiet --log '%s'", net, dir,
             log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    ck_assert_ptr_nonnull(strstr(test_slurp(out_path), "300 training, 60 test examples"));
    const char *csv = test_slurp(log);
    ck_assert_msg(strncmp(csv, "epoch,seconds,train_loss,test_loss,test_acc\n", 44) == 0, "%s", csv);
    ck_assert_int_eq(count_lines(csv), 6);
    ck_assert_msg(last_field(csv) > 0.9, "3 classes: test accuracy %g", last_field(csv));
    /* a 2-class network: label 2 is past its classes */
    snprintf(net, sizeof net, "%s/two.net", dir);
    write_file(net, "[net]\ninputs = 4\n[dense]\nunits = 2\nactivation = linear\n[train]\nbatch = 20\n");
    snprintf(args, sizeof args, "train '%s' --data '%s' --label-column 3 --threads 1 --quiet", net, dir);
    snprintf(path, sizeof path, "%s/train.csv:", dir);
    expect_error(args, 3, path);
    ck_assert_ptr_nonnull(strstr(test_slurp(err_path), "outside [0, 2)"));

    /* 26 classes as IDX: 0x0D features (n x 26), 0x0B labels */
    snprintf(dir, sizeof dir, "%s/letters", test_tmpdir());
    snprintf(args, sizeof args, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(args), 0);
    kfac_rng r;
    kfac_rng_seed(&r, 26);
    const char *sets[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        int n = s ? 260 : 1040;
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, sets[s]);
        FILE *fi = fopen(path, "wb");
        snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, sets[s]);
        FILE *fl = fopen(path, "wb");
        ck_assert(fi && fl);
        test_write_be(fi, 0x0D02, 4), test_write_be(fi, (uint64_t)n, 4), test_write_be(fi, 26, 4);
        test_write_be(fl, 0x0B01, 4), test_write_be(fl, (uint64_t)n, 4);
        for (int i = 0; i < n; i++) {
            int c = i % 26;
            for (int k = 0; k < 26; k++) {
                float v = (k == c ? 2.0f : 0.0f) + 0.3f * (float)kfac_rng_uniform(&r);
                uint32_t w;
                memcpy(&w, &v, 4);
                test_write_be(fi, w, 4);
            }
            test_write_be(fl, (uint64_t)c, 2);
        }
        fclose(fi);
        fclose(fl);
    }
    snprintf(net, sizeof net, "%s/letters.net", dir);
    write_file(net, "[net]\ninputs = 26\n[dense]\nunits = 26\nactivation = linear\n[train]\nbatch = 26\n"
                    "epochs = 4\nlr = 0.2\n");
    snprintf(log, sizeof log, "%s/run.csv", dir);
    snprintf(args, sizeof args, "train '%s' --data '%s' --threads 1 --quiet --log '%s'", net, dir, log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    csv = test_slurp(log);
    ck_assert_int_eq(count_lines(csv), 5);
    ck_assert_msg(last_field(csv) > 0.9, "26 classes: test accuracy %g", last_field(csv));
}
END_TEST

/* --val-fraction: the split's sizes, the val_loss,val_acc columns on
 * stdout and in the log (after the test ones, or alone for one CSV file,
 * which has no test set); --early-stop stops when the validation set
 * contradicts the training set, saying so. */
START_TEST(test_validation_columns)
{
    char dir[600], path[800], net[800], log[800], args[4096];
    snprintf(dir, sizeof dir, "%s/val", test_tmpdir());
    snprintf(args, sizeof args, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(args), 0);
    snprintf(path, sizeof path, "%s/train.csv", dir);
    write_csv(path, 200, 3, 1 << 30, 3);
    snprintf(net, sizeof net, "%s/three.net", dir);
    write_file(net, "[net]\ninputs = 4\n[dense]\nunits = 3\nactivation = linear\n[train]\nbatch = 20\n"
                    "epochs = 3\nlr = 0.1\nlabel_column = 3\nval_fraction = 0.2\n");
    snprintf(log, sizeof log, "%s/one.csv", dir);
    snprintf(args, sizeof args, "train '%s' --data '%s' --threads 1 --quiet --log '%s'", net, path, log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    const char *out = test_slurp(out_path);
    ck_assert_msg(strstr(out, ": 160 training, 40 validation examples (the last 0.2 of the training set), no test set\n"),
                  "%s", out);
    ck_assert_msg(strstr(out, "\nepoch   seconds  train_loss    val_loss       val_acc\n"), "%s", out);
    const char *csv = test_slurp(log);
    ck_assert_msg(strncmp(csv, "epoch,seconds,train_loss,val_loss,val_acc\n", 42) == 0, "%s", csv);
    ck_assert_int_eq(count_lines(csv), 4);
    int e;
    double secs, tl, vl, va;
    ck_assert_int_eq(sscanf(strstr(csv, "\n3,") + 1, "%d,%lf,%lf,%lf,%lf", &e, &secs, &tl, &vl, &va), 5);
    ck_assert_int_eq(e, 3);
    ck_assert_msg(va > 0.8 && vl < 1.0, "validation %g %g", vl, va);
    /* no validation: the columns of one file are the training ones alone */
    snprintf(args, sizeof args, "train '%s' --data '%s' --threads 1 --quiet --log '%s' --val-fraction 0", net, path,
             log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    ck_assert_msg(strncmp(test_slurp(log), "epoch,seconds,train_loss\n", 25) == 0, "%s", test_slurp(log));
    ck_assert_ptr_nonnull(strstr(test_slurp(out_path), ": 200 training examples, no test set\n"));
    /* with a test set: test columns, then validation ones */
    snprintf(path, sizeof path, "%s/test.csv", dir);
    write_csv(path, 50, 3, 1 << 30, 4);
    snprintf(args, sizeof args, "train '%s' --data '%s' --threads 1 --quiet --log '%s' --val-fraction 0.25", net, dir,
             log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    ck_assert_ptr_nonnull(strstr(test_slurp(out_path), ": 150 training, 50 validation examples (the last 0.25 of the "
                                                  "training set), 50 test examples\n"));
    csv = test_slurp(log);
    ck_assert_msg(strncmp(csv, "epoch,seconds,train_loss,test_loss,test_acc,val_loss,val_acc\n", 61) == 0, "%s", csv);
    ck_assert_int_eq(sscanf(strstr(csv, "\n1,") + 1, "%d,%lf,%lf,%lf,%lf,%lf,%lf", &e, &secs, &tl, &vl, &va, &vl, &va),
                     7);

    /* early stop: the last 20% contradict the rest, so the validation
     * loss rises as training fits; 3 epochs without a lower one stop it */
    snprintf(path, sizeof path, "%s/flip.csv", dir);
    write_csv(path, 200, 3, 160, 5);
    snprintf(log, sizeof log, "%s/flip-log.csv", dir);
    snprintf(args, sizeof args, "train '%s' --data '%s' --threads 1 --quiet --log '%s' --epochs 100 --early-stop 3",
             net, path, log);
    ck_assert_msg(run_kfac(args) == 0, "%s", test_slurp(err_path));
    out = test_slurp(out_path);
    const char *stop = strstr(out, "# early stop after epoch ");
    ck_assert_msg(stop, "no early stop: %s", out);
    int at = atoi(stop + strlen("# early stop after epoch ")), best = atoi(strstr(stop, "(lowest at epoch ") + 17);
    ck_assert_msg(strstr(stop, ": the validation loss has not improved for 3 epochs (lowest at epoch "), "%s", stop);
    ck_assert_int_eq(at, best + 3);
    ck_assert_int_lt(at, 100);
    ck_assert_int_eq(count_lines(test_slurp(log)), at + 1); /* the header and the epochs run */
}
END_TEST

Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_help);
    tcase_add_test(tc, test_bad_flags);
    tcase_add_test(tc, test_bad_inputs);
    tcase_add_test(tc, test_kfac_flags);
    tcase_add_test(tc, test_compare);
    tcase_add_test(tc, test_per_optimizer_settings);
    tcase_add_test(tc, test_run_and_log);
    tcase_add_test(tc, test_output_modes);
    tcase_add_test(tc, test_autoencoder_log);
    tcase_add_test(tc, test_plurals);
    tcase_add_test(tc, test_checkpoints);
    tcase_add_test(tc, test_resume_appends_log);
    tcase_add_test(tc, test_adam_flags);
    tcase_add_test(tc, test_spin_wait_bounded);
    tcase_add_test(tc, test_own_classes);
    tcase_add_test(tc, test_validation_columns);
    suite_add_tcase(s, tc);
    /* trains on the real data (left out under valgrind) */
    tc = tcase_create("check");
    tcase_set_tags(tc, "training");
    tcase_add_test(tc, test_csv_example);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_check);
    suite_add_tcase(s, tc);
    return s;
}
