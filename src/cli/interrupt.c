/* interrupt.c - how the kfac program meets SIGINT, SIGTERM and a closed
 * standard output: the signals are only recorded here (the training loop
 * stops at the end of its step, saves and exits 128 + the signal), and a
 * reader that goes away (`| head`) ends the output, not the run. The
 * library knows nothing of signals. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static volatile sig_atomic_t first_signal;

/* Only a flag: the first signal decides the exit status; later ones (a
 * second Ctrl-C during the save) change nothing, so the save finishes and
 * leaves no temporary file. */
static void record(int sig)
{
    if (!first_signal)
        first_signal = sig;
}

void cli_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = record;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* writes and fsync of a save carry on */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void cli_sigpipe_ignore(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
}

int cli_signal_pending(void) { return first_signal; }


int cli_signal_exit(int sig) { return 128 + sig; }

const char *cli_signal_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

static int stdout_gone, stdout_errno;

void cli_stdout_flush(void)
{
    if (stdout_gone || (fflush(stdout) == 0 && !ferror(stdout)))
        return;
    int e = errno;
    stdout_gone = 1;
    stdout_errno = e;
    /* say it once; what follows goes nowhere, quietly */
    fprintf(stderr, "kfac: standard output: %s; going on without it\n", strerror(e));
    if (!freopen("/dev/null", "w", stdout))
        clearerr(stdout);
}

int cli_stdout_failed(void)
{
    cli_stdout_flush();
    /* a reader that left (EPIPE) took what it wanted; a full disk or an
     * I/O error lost output the caller expected */
    return stdout_gone && stdout_errno != EPIPE;
}
