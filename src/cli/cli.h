/* cli.h - shared pieces of the kfac command-line program: exit statuses,
 * strict number parsing, error printing. */
#ifndef KFAC_CLI_H
#define KFAC_CLI_H

#include "kfac.h"
#include "plural.h"

/* Exit statuses (documented in `kfac --help` and the README); a run
 * stopped by SIGINT or SIGTERM exits 128 + the signal: 130, 143. */
enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1, /* I/O while writing, out of memory, ... */
    EXIT_USAGE = 2,   /* unknown flag, missing or bad value */
    EXIT_INPUT = 3,   /* unreadable or malformed net file or data */
    EXIT_DIVERGED = 4, /* training produced NaN/Inf */
    EXIT_CHECK = 5     /* `kfac check`: a measurement outside its tolerance */
};

/* Signals and standard output (interrupt.c). install: SIGINT and SIGTERM
 * only recorded (SA_RESTART); pending: the first one received, 0 if none;
 * its exit status is 128 + the signal (130, 143). sigpipe_ignore: a closed
 * pipe is a write error, not death. stdout_flush: fflush(stdout); the
 * first failure (EPIPE) is said once on stderr and stdout then goes to
 * /dev/null, the run going on. */
void cli_signals_install(void);
void cli_sigpipe_ignore(void);
int cli_signal_pending(void);
int cli_signal_exit(int sig);
const char *cli_signal_name(int sig);
void cli_stdout_flush(void);
/* At exit: stdout flushed, and whether output was lost other than to a
 * reader that closed the pipe (then the exit status is not success). */
int cli_stdout_failed(void);

/* The progress line on a terminal (progress.c): "epoch E/N  P%  loss L
 * R ex/s  ETA epoch T, run T" into buf. mean_loss NaN (no step yet) and
 * rate <= 0 (not measured) leave their parts out. */
int cli_progress_format(char *buf, size_t size, int epoch, int epochs, long examples, long total,
                        double mean_loss, double rate);

/* MPI (cli_mpi.c; one process without it). start: MPI_Init, and
 * silence stdout on ranks other than 0; stop: MPI_Finalize. */
void cli_mpi_start(int *argc, char ***argv);
void cli_mpi_stop(void);
/* The worst (largest) exit status over the ranks; collective. */
int cli_mpi_agree(int code);
/* A pointer to MPI_COMM_WORLD for kfac_trainer_set_mpi_comm when there
 * are several ranks, else NULL. */
const void *cli_mpi_comm(void);
int cli_rank(void);
int cli_ranks(void);

/* Strict parsers: the whole string must be a number. 0 on success. */
int cli_parse_int(const char *s, long lo, long hi, long *out);
int cli_parse_u64(const char *s, uint64_t *out);
int cli_parse_float(const char *s, float *out);

/* "kfac: <what>: <library detail or strerror>" on stderr, from rank 0
 * only (the others fail alike); cli_error_local from whichever rank
 * failed (a file another rank could read), naming it. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_error_local(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_status_exit(kfac_status st);

/* The options of a command: "--name", whether a value follows (as the
 * next word or after '='), and the command's id for it. */
typedef struct cli_opt {
    const char *name;
    int has_value;
    int id;
} cli_opt;

/* A command line read by cli_getopt: its NETFILE, whether --help (or -h)
 * was asked, and the options in the order given. */
typedef struct cli_args {
    const char *netfile;
    int help;
    int n;
    struct {
        int id;
        const char *name, *value; /* value NULL for a flag without one */
    } *v;
} cli_args;

/* getopt_long over opts (no abbreviations, NETFILE anywhere, "--" ends the
 * options). Returns -1 to go on (free *out with cli_args_free), or, after
 * printing the problem (unknown option, missing value, no or a second
 * NETFILE), the exit status. */
int cli_getopt(const char *cmd, int argc, char **argv, const cli_opt *opts, int n_opts, cli_args *out);
void cli_args_free(cli_args *a);

/* Load the train and test sets of PATH (kfac_data_load: a directory of
 * IDX or CSV files; one CSV file is a training set alone, and *test is
 * left empty, n 0), with the network's classes and p's label column (the
 * library pools them for a net file's `pool`); prints the error and
 * returns the exit status on failure, 0 on success. */
int cli_load_data(const char *path, const kfac_net_spec *spec, const kfac_train_params *p, kfac_dataset *train,
                  kfac_dataset *test);
/* The classes a network's data must have: a classifier's outputs; 0
 * (whatever the labels say) for the other losses. */
int cli_classes(const kfac_net_spec *spec);
/* 1 if path exists and is not a directory */
int cli_is_file(const char *path);

/* Outputs are checked before any work: a file that can be written where
 * the name says (its directory exists and is writable, the name leaves
 * room for the temporary suffix, it is not a directory). -1 to go on, or
 * the exit status after printing the problem. */
int cli_check_output(const char *cmd, const char *flag, const char *path);
/* a and b name the same file: through links, or as names of one place */
int cli_same_file(const char *a, const char *b);

/* --threads N (N > 0): the library's thread count, and a note on stderr
 * where OpenBLAS caps it. */
void cli_set_threads(long threads);

/* The OpenMP wait policy this process runs with, as set in its
 * environment ("GOMP_SPINCOUNT=1000"; "" for libgomp's default). */
const char *cli_wait_policy(void);

int cmd_train(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_eval(int argc, char **argv);

#endif
