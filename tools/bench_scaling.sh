#!/usr/bin/env bash
# Data-parallel scaling on this machine: training images/s of `-n 1` and `-n 2` ranks with one
# thread each, one epoch per run, alternated, medians of REPEATS runs. Not a test: timings need
# a quiet machine.   tools/bench_scaling.sh DATA_DIR [REPEATS]   (e.g. data/icbm128)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: tools/bench_scaling.sh DATA_DIR [REPEATS]}"
repeats="${2:-3}"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
declare -A rates
for r in $(seq "$repeats"); do
  for n in 1 2; do
    launch/local.sh -n "$n" train --data "$data" --run-dir "$work/n$n-$r" --epochs 1 --threads 1 >/dev/null
    rate=$(tail -1 "$work/n$n-$r/history.csv" | awk -F, '{print $NF}')
    rates[$n]+="$rate "
    echo "run $r: -n $n x 1 thread: $rate images/s"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
m1=$(echo "${rates[1]}" | median); m2=$(echo "${rates[2]}" | median)
echo "median images/s: -n 1 $m1, -n 2 $m2, speed-up $(awk -v a="$m1" -v b="$m2" 'BEGIN {printf "%.2f", b / a}')x"
