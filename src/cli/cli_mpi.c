/* cli_mpi.c - the kfac program's part of MPI (make MPI=1): as the program
 * it initialises and finalises MPI (the library never does), knows its
 * rank, and lets the ranks agree on an exit status so that a failure on
 * one of them (writing the log, a save) stops all. Built without MPI:
 * one process, and every function is trivial. */
#include <stdio.h>

#include "cli.h"

#ifdef KFAC_MPI
#include <mpi.h>

static int started, rank, size = 1;
static MPI_Comm world;

void cli_mpi_start(int *argc, char ***argv)
{
    /* a program started without mpirun is a group of one */
    if (MPI_Init(argc, argv) != MPI_SUCCESS)
        return;
    started = 1;
    world = MPI_COMM_WORLD;
    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    /* only rank 0 prints results; the others' stdout goes nowhere */
    if (rank != 0 && !freopen("/dev/null", "w", stdout))
        fclose(stdout);
}

void cli_mpi_stop(void)
{
    if (started)
        MPI_Finalize();
}

int cli_mpi_agree(int code)
{
    if (size == 1)
        return code;
    int worst = code;
    if (MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_INT, MPI_MAX, world) != MPI_SUCCESS)
        MPI_Abort(world, EXIT_RUNTIME); /* the last resort: no way to agree */
    return worst;
}

const void *cli_mpi_comm(void) { return size > 1 ? &world : NULL; }
int cli_rank(void) { return rank; }
int cli_ranks(void) { return size; }

#else

void cli_mpi_start(int *argc, char ***argv) { (void)argc, (void)argv; }
void cli_mpi_stop(void) {}
int cli_mpi_agree(int code) { return code; }
const void *cli_mpi_comm(void) { return NULL; }
int cli_rank(void) { return 0; }
int cli_ranks(void) { return 1; }

#endif
