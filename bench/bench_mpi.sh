#!/usr/bin/env bash
# bench_mpi.sh - data-parallel throughput on this machine (bench/MPI.md):
# one epoch of NET with sgd and with kfac, run as 1 rank x 2 threads,
# 1 rank x 1 thread and 2 ranks x 1 thread, the configurations interleaved
# REPEATS times so that load from other jobs hits them alike, each run
# under flock /tmp/kfac-cpu.lock so it never overlaps other heavy jobs.
# Prints every run, then the medians of the training seconds (evaluation
# excluded) and examples per second. --bind-to none: Open MPI binds a job
# of 1 or 2 ranks to one core each by default, which would put the
# 1 rank x 2 threads run's two threads on one core.
# usage: bench/bench_mpi.sh MPI_BUILD_DIR NET DATA [REPEATS]   (make bench-mpi)
set -euo pipefail
bin=$1/kfac net=$2 data=$3 reps=${4:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
       OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 \
       OMPI_MCA_mpi_yield_when_idle=${YIELD:-1}
configs="1x2 1x1 2x1"
declare -A secs
echo "# $(date -u +%F) $(uname -m), $(nproc) cores: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "# $net, one epoch ($data), default [train]/[kfac] settings of the net file, $reps interleaved repeats, mpi_yield_when_idle=$OMPI_MCA_mpi_yield_when_idle"
for r in $(seq 1 "$reps"); do
  for opt in sgd kfac; do
    for c in $configs; do
      ranks=${c%x*} threads=${c#*x}
      out=$(OMP_NUM_THREADS=$threads flock /tmp/kfac-cpu.lock mpirun --oversubscribe --bind-to none -np "$ranks" -x OMP_NUM_THREADS \
            "$bin" train "$net" --data "$data" --optimizer "$opt" --epochs 1 --threads "$threads" --quiet)
      s=$(echo "$out" | awk '$1 == "1" { print $2 }')
      n=$(echo "$out" | sed -n 's/^# data .*: \([0-9]*\) training.*/\1/p')
      kf=$(echo "$out" | sed -n 's/^# kfac: [0-9]* statistics rounds/&/p' | tail -1)
      echo "run $r $opt ${ranks} rank(s) x ${threads} thread(s): $s s ${kf:+| $kf}"
      secs[$opt,$c]="${secs[$opt,$c]:-} $s"
    done
  done
done
echo
printf '%-6s %-22s %10s %12s %9s\n' optim configuration seconds examples/s "vs 1x2"
for opt in sgd kfac; do
  base=""
  for c in $configs; do
    med=$(echo ${secs[$opt,$c]} | tr ' ' '\n' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    [ -z "$base" ] && base=$med
    awk -v o="$opt" -v c="${c%x*} rank(s) x ${c#*x} thr" -v m="$med" -v n="$n" -v b="$base" \
      'BEGIN { printf "%-6s %-22s %10.2f %12.0f %8.2fx\n", o, c, m, n / m, b / m }'
  done
done
