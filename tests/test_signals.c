/* test_signals.c - the kfac program stopped by SIGINT or SIGTERM, and its
 * standard output closed under it (src/cli/interrupt.c): the exit status,
 * the message, the checkpoint written whole (no temporary file left) and
 * resumed to the same bits as an uninterrupted run; and the progress
 * line's text (src/cli/progress.c, linked into the test runner). None
 * depends on the machine's speed: the program's stdout is a pipe of one
 * page, which it fills within its first ~80 epochs unless the test reads,
 * so every run is stopped before its last epoch, whatever the speed. */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "kfac.h"
#include "tests.h"

enum { EPOCHS = 200 };

/* 200 training and 50 test 28x28 images in DIR, each class one bright row */
static const char *small_data(void)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/sigdata", test_tmpdir());
    test_write_mnist(dir, 200, 7);
    return dir;
}

static char err_path[600];

/* Start `kfac train ARGS...` from the project root, stdout a one-page
 * pipe (returned in *out), stderr to err_path. */
static pid_t start_kfac(char *const args[], int *out)
{
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    ck_assert(fcntl(fd[1], F_SETPIPE_SZ, 4096) >= 0);
    snprintf(err_path, sizeof err_path, "%s/signals.err", test_tmpdir());
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (err < 0 || chdir(test_root()) != 0)
            _exit(126);
        dup2(fd[1], 1);
        dup2(err, 2);
        close(fd[0]);
        close(fd[1]);
        execv(test_kfac_bin(), args);
        _exit(127);
    }
    close(fd[1]);
    *out = fd[0];
    return pid;
}

/* Read the pipe until the first epoch's line has come. */
static void wait_first_epoch(int fd)
{
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ck_assert_msg(len < sizeof buf - 1, "no epoch line in %zu bytes", len);
        ssize_t got = read(fd, buf + len, sizeof buf - 1 - len);
        ck_assert_msg(got > 0, "kfac ended before its first epoch: %s", buf);
        len += (size_t)got;
        buf[len] = '\0';
        if (strstr(buf, "\n    1 "))
            return;
    }
}

/* Read what is left, then the exit status. */
static int finish(pid_t pid, int fd)
{
    char buf[4096];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    close(fd);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "kfac ended by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

static int tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    return n;
}

/* Run `kfac train` to the end (stdout to /dev/null); 0 on success. */
static int run_to_end(const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' train %s >/dev/null 2>'%s'", test_root(), test_kfac_bin(), args,
             err_path);
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* theta of a checkpoint of nets/tiny.net, malloc'ed */
static float *weights(const char *ckpt, size_t *n)
{
    char net[700];
    snprintf(net, sizeof net, "%s/nets/tiny.net", test_root());
    kfac_net_spec spec;
    kfac_train_params p;
    ck_assert_msg(kfac_netfile_load(net, &spec, &p) == KFAC_OK, "%s", kfac_last_error());
    kfac_net *m;
    ck_assert_int_eq(kfac_net_new(&spec, 1, &m), KFAC_OK);
    ck_assert_msg(kfac_net_load_checkpoint(m, ckpt) == KFAC_OK, "%s", kfac_last_error());
    *n = kfac_net_n_params(m);
    float *w = malloc(*n * sizeof *w);
    memcpy(w, kfac_net_params(m), *n * sizeof *w);
    kfac_net_free(m);
    return w;
}

typedef struct sig_case {
    int sig, second; /* the signal, and one sent right after it (0: none) */
    const char *optimizer, *name;
    int status;
} sig_case;

static const sig_case sig_cases[] = {
    {SIGINT, 0, "kfac", "SIGINT", 130},
    {SIGTERM, 0, "adam", "SIGTERM", 143},
    {SIGINT, SIGINT, "kfac", "SIGINT", 130}, /* a second Ctrl-C during the stop and save */
};

/* A `--save` run stopped after its first epoch line: the documented
 * status and message, one checkpoint and no temporary file; resumed to
 * the full count, the same weights as an uninterrupted run, bit for bit. */
START_TEST(test_signal_saves_and_resumes)
{
    const sig_case *c = &sig_cases[_i];
    const char *data = small_data();
    char dir[600], ckpt[700], straight[700], epochs[16], args[4096];
    snprintf(dir, sizeof dir, "%s/sig%d", test_tmpdir(), _i);
    snprintf(args, sizeof args, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(args), 0);
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    snprintf(straight, sizeof straight, "%s/straight.ckpt", dir);
    snprintf(epochs, sizeof epochs, "%d", EPOCHS);
    char *argv[] = {(char *)test_kfac_bin(), "train", "nets/tiny.net", "--data", (char *)data, "--epochs", epochs,
                    "--batch", "20", "--threads", "1", "--optimizer", (char *)c->optimizer, "--save", ckpt, NULL};
    int fd;
    pid_t pid = start_kfac(argv, &fd);
    wait_first_epoch(fd);
    ck_assert_int_eq(kill(pid, c->sig), 0);
    if (c->second)
        ck_assert_int_eq(kill(pid, c->second), 0);
    int status = finish(pid, fd);
    const char *err = test_slurp(err_path);
    ck_assert_msg(status == c->status, "exit %d, expected %d: %s", status, c->status, err);
    char want[800];
    snprintf(want, sizeof want, "kfac: %s: stopped ", c->name);
    ck_assert_msg(strstr(err, want) && strstr(err, "; saved ") && strstr(err, ckpt), "stderr: %s", err);
    ck_assert_msg(!strchr(err, '\n') || !strchr(strchr(err, '\n') + 1, '\n'), "one line expected: %s", err);
    ck_assert_int_eq(tmp_files(dir), 0);

    snprintf(args, sizeof args, "nets/tiny.net --data '%s' --epochs %d --batch 20 --threads 1 --optimizer %s "
             "--resume '%s' --save '%s'", data, EPOCHS, c->optimizer, ckpt, ckpt);
    ck_assert_msg(run_to_end(args) == 0, "resume: %s", test_slurp(err_path));
    snprintf(args, sizeof args, "nets/tiny.net --data '%s' --epochs %d --batch 20 --threads 1 --optimizer %s --save '%s'",
             data, EPOCHS, c->optimizer, straight);
    ck_assert_msg(run_to_end(args) == 0, "straight: %s", test_slurp(err_path));
    size_t na, nb;
    float *a = weights(ckpt, &na), *b = weights(straight, &nb);
    ck_assert(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    free(a);
    free(b);
    ck_assert_int_eq(tmp_files(dir), 0);
}
END_TEST

/* Without --save: the same stop and status, nothing written. */
START_TEST(test_signal_without_save)
{
    const char *data = small_data();
    char epochs[16];
    snprintf(epochs, sizeof epochs, "%d", EPOCHS);
    char *argv[] = {(char *)test_kfac_bin(), "train", "nets/tiny.net", "--data", (char *)data, "--epochs", epochs,
                    "--batch", "20", "--threads", "1", NULL};
    int fd;
    pid_t pid = start_kfac(argv, &fd);
    wait_first_epoch(fd);
    ck_assert_int_eq(kill(pid, SIGINT), 0);
    int status = finish(pid, fd);
    const char *err = test_slurp(err_path);
    ck_assert_msg(status == 130, "exit %d: %s", status, err);
    ck_assert_msg(strstr(err, "kfac: SIGINT: stopped ") && strstr(err, "nothing saved (no --save)"), "%s", err);
}
END_TEST

/* stdout closed by its reader after the first epoch (`| head`): the run
 * goes on to its end, says so once, exits 0 and saves what an
 * uninterrupted run saves. */
START_TEST(test_closed_stdout)
{
    const char *data = small_data();
    char dir[600], ckpt[700], straight[700], epochs[16], args[4096];
    snprintf(dir, sizeof dir, "%s/pipe", test_tmpdir());
    snprintf(args, sizeof args, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(args), 0);
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    snprintf(straight, sizeof straight, "%s/straight.ckpt", dir);
    snprintf(epochs, sizeof epochs, "%d", EPOCHS);
    char *argv[] = {(char *)test_kfac_bin(), "train", "nets/tiny.net", "--data", (char *)data, "--epochs", epochs,
                    "--batch", "20", "--threads", "1", "--save", ckpt, NULL};
    int fd;
    pid_t pid = start_kfac(argv, &fd);
    wait_first_epoch(fd);
    close(fd);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    const char *err = test_slurp(err_path);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, err);
    ck_assert_msg(strstr(err, "kfac: standard output: Broken pipe; going on without it\n") &&
                      strchr(err, '\n') == err + strlen(err) - 1,
                  "stderr: %s", err);
    snprintf(args, sizeof args, "nets/tiny.net --data '%s' --epochs %d --batch 20 --threads 1 --save '%s'", data,
             EPOCHS, straight);
    ck_assert_msg(run_to_end(args) == 0, "straight: %s", test_slurp(err_path));
    size_t na, nb;
    float *a = weights(ckpt, &na), *b = weights(straight, &nb);
    ck_assert(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    free(a);
    free(b);
}
END_TEST

/* The progress line: epoch, percentage, running loss, rate, both ETAs;
 * the parts not known yet left out. */
START_TEST(test_progress_line)
{
    char line[160];
    /* 3000 of 60000 examples at 1000 examples/s: 57 s left in the epoch,
     * and 2 more epochs of 60 s each */
    cli_progress_format(line, sizeof line, 3, 5, 3000, 60000, 0.4123456, 1000.0);
    ck_assert_str_eq(line, "  epoch 3/5   5%  loss 0.412346  1000 ex/s  ETA 0:57 epoch, 2:57 run");
    cli_progress_format(line, sizeof line, 1, 100, 59999, 60000, 2.5, 10.0);
    ck_assert_str_eq(line, "  epoch 1/100  99%  loss 2.500000  10 ex/s  ETA 0:00 epoch, 165:00:00 run");
    cli_progress_format(line, sizeof line, 2, 2, 0, 100, NAN, 0.0);
    ck_assert_str_eq(line, "  epoch 2/2   0%");
    cli_progress_format(line, sizeof line, 1, 1, 50, 100, 1.0, 0.0);
    ck_assert_str_eq(line, "  epoch 1/1  50%  loss 1.000000");
    /* a short buffer is cut, never overrun */
    char tiny[12];
    cli_progress_format(tiny, sizeof tiny, 3, 5, 3000, 60000, 0.4, 1000.0);
    ck_assert_str_eq(tiny, "  epoch 3/5");
}
END_TEST

/* On a terminal (a pty from script(1), when it is there) the progress
 * line is drawn on stderr with every part; with --quiet it is not. */
START_TEST(test_progress_on_terminal)
{
    if (system("command -v script >/dev/null 2>&1") != 0) {
        fprintf(stderr, "signals: no script(1); the progress line is checked as text only\n");
        return;
    }
    const char *data = small_data();
    char out[600], cmd[4096];
    snprintf(out, sizeof out, "%s/tty.out", test_tmpdir());
    for (int quiet = 0; quiet < 2; quiet++) {
        snprintf(cmd, sizeof cmd,
                 "cd '%s' && script -qec \"'%s' train nets/tiny.net --data '%s' --epochs 2 --batch 20 --threads 1%s\" "
                 "/dev/null >'%s' 2>&1 </dev/null",
                 test_root(), test_kfac_bin(), data, quiet ? " --quiet" : "", out);
        ck_assert_int_eq(system(cmd), 0);
        const char *text = test_slurp(out);
        int drawn = strstr(text, "\r  epoch 2/2 ") && strstr(text, "  loss ") && strstr(text, " ex/s  ETA ") &&
                    strstr(text, " epoch, ") && strstr(text, " run\033[K");
        ck_assert_msg(drawn == !quiet, "quiet %d: %s", quiet, text);
        /* the epochs' lines still there (a pty ends lines with \r\n; the
         * line is cleared before each) */
        const char *header = strstr(text, "train_loss");
        ck_assert_msg(header && strstr(header, "    1 ") && strstr(header, "    2 "), "%s", text);
    }
}
END_TEST

Suite *signals_suite(void)
{
    Suite *s = suite_create("signals");
    TCase *tc = tcase_create("signals");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_signal_saves_and_resumes, 0, (int)(sizeof sig_cases / sizeof *sig_cases));
    tcase_add_test(tc, test_signal_without_save);
    tcase_add_test(tc, test_closed_stdout);
    tcase_add_test(tc, test_progress_line);
    tcase_add_test(tc, test_progress_on_terminal);
    suite_add_tcase(s, tc);
    return s;
}
