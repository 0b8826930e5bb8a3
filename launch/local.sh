#!/usr/bin/env bash
# Runs unet-dist on N ranks of this machine:  launch/local.sh -n 4 train --data DIR --run-dir DIR
#
# Adds --allow-run-as-root only when run as root, and --oversubscribe only when N exceeds the
# cores; on a real cluster use mpirun (launch/hostfile.example) or SLURM (launch/slurm.sbatch).
#
# SIGTERM or SIGINT (Ctrl-C) to this script stops the run gracefully: every rank stops at the
# next step boundary, rank 0 writes checkpoints/last.safetensors, and the script exits 75
# (requeue with --resume). mpirun itself turns SIGTERM into a kill (SIGTERM to the ranks after
# odls_base_sigkill_timeout seconds, SIGKILL after as many again, and its own status 1), but it
# forwards SIGUSR1 untouched and reports the ranks' status: so the script sends that instead.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
n=1
if [ "${1:-}" = "-n" ]; then n="$2"; shift 2; fi
bin="${UNET_DIST_BIN:-$here/.build/release/unet-dist}"
# When mpirun itself gets SIGTERM (kill PID, a container stop), the ranks get SIGTERM after this
# many seconds and SIGKILL after as many again (Open MPI's odls_base_sigkill_timeout, 1 s by
# default): 5 s to finish a step and write the checkpoint, 10 s where the ranks got SIGTERM too.
# The price: mpirun reports any non-zero end of the job (an error, a dead rank, a stop) up to
# twice as many seconds later, as it waits out the same timeouts.
flags=(--bind-to none --mca odls_base_sigkill_timeout "${UNET_DIST_SIGKILL_TIMEOUT:-5}")
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
[ "$n" -gt "$(nproc)" ] && flags+=(--oversubscribe)
# Its own process group, so that a terminal's Ctrl-C reaches this script only, not mpirun.
set -m
mpirun "${flags[@]}" -n "$n" "$bin" "$@" </dev/null &
pid=$!
trap 'kill -USR1 "$pid" 2>/dev/null || true' TERM INT
# wait returns early when a trapped signal arrives: wait again until mpirun has ended.
status=0
while :; do
  wait "$pid" && status=0 || status=$?
  kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
