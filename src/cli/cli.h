/* cli.h - shared pieces of the kfac command-line program: exit statuses,
 * strict number parsing, error printing. */
#ifndef KFAC_CLI_H
#define KFAC_CLI_H

#include "kfac.h"
#include "plural.h"

/* Exit statuses (documented in `kfac --help` and the README). */
enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1, /* I/O while writing, out of memory, ... */
    EXIT_USAGE = 2,   /* unknown flag, missing or bad value */
    EXIT_INPUT = 3,   /* unreadable or malformed net file or data */
    EXIT_DIVERGED = 4, /* training produced NaN/Inf */
    EXIT_CHECK = 5     /* `kfac check`: a measurement outside its tolerance */
};

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

/* One word of a command taking one NETFILE and `--name value` or
 * `--name=value` options (check, eval). */
typedef enum { CLI_ARG_OPTION, CLI_ARG_NETFILE, CLI_ARG_HELP, CLI_ARG_ERROR } cli_arg_kind;
/* Classify argv[*i]: a NETFILE is stored in *netfile (a second one is an
 * error), --help/-h is reported, an option gives its name (*len bytes, not
 * NUL-terminated) and value, *i moving past a separate value. A missing
 * value or second NETFILE prints its line and gives CLI_ARG_ERROR. */
cli_arg_kind cli_next_arg(const char *cmd, int argc, char **argv, int *i, const char **netfile, const char **name,
                          size_t *len, const char **value);
/* name (len bytes) is the option `want` */
int cli_opt_is(const char *name, size_t len, const char *want);

/* Load DIR's train and t10k sets (the library pools them for a net file's
 * `pool`); prints the error and returns the exit status on failure, 0 on
 * success. */
int cli_load_data(const char *dir, kfac_dataset *train, kfac_dataset *test);

/* The OpenMP wait policy this process runs with, as set in its
 * environment ("GOMP_SPINCOUNT=1000"; "" for libgomp's default). */
const char *cli_wait_policy(void);

int cmd_train(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_eval(int argc, char **argv);

#endif
