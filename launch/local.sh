#!/usr/bin/env bash
# Runs unet-dist on N ranks of this machine:  launch/local.sh -n 4 train --data DIR --run-dir DIR
#
# Adds --allow-run-as-root only when run as root, and --oversubscribe only when N exceeds the
# cores; on a real cluster use mpirun (launch/hostfile.example) or SLURM (launch/slurm.sbatch).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
n=1
if [ "${1:-}" = "-n" ]; then n="$2"; shift 2; fi
bin="${UNET_DIST_BIN:-$here/.build/release/unet-dist}"
flags=(--bind-to none)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
[ "$n" -gt "$(nproc)" ] && flags+=(--oversubscribe)
exec mpirun "${flags[@]}" -n "$n" "$bin" "$@"
