#!/usr/bin/env bash
# Data-parallel scaling on this machine: images/s of `-n 1` and `-n 2` ranks with one thread
# each, alternated, medians of REPEATS runs.
#
#   tools/bench_scaling.sh DATA_DIR [REPEATS]   training: one epoch per run (history.csv's rate)
#   tools/bench_scaling.sh --bench [REPEATS]    `unet-dist bench` at 128x128 (synthetic images,
#                                               8 timed steps after a warm-up step per run)
#   tools/bench_scaling.sh --synthetic [REPEATS] tools/machine/sync_step.c instead of unet-dist:
#                                               the same step shape (29 small allreduces, FMAs
#                                               from L1, a batch-sized buffer streamed) with none
#                                               of our code, so what -n 2 loses there is the
#                                               machine's toll on ranks in lockstep
#                                               (SEGMENTS=1: one allreduce per step instead)
#
# Each round also runs the machine's own reference for two ranks: two independent `-n 1` runs at
# once, each with half the batch (a rank's share under `-n 2`), nothing exchanged. Their summed
# images/s over `-n 1`'s is what two busy cores give this workload without any communication; on
# a shared VM it can fall well short of 2 (cores that slow each other, or a neighbour's load),
# and `-n 2` cannot beat it. `-n 2` over the pair is what our collectives and the ranks' waiting
# for each other cost.
# Not a test: timings need a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: tools/bench_scaling.sh DATA_DIR|--bench|--synthetic [REPEATS]}"
repeats="${2:-3}"
batch=16
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
if [ "$data" = --bench ]; then
  # The run's global images/s, from bench's JSON (its last line).
  rate() { tail -1 "$1/out.json" | sed 's/.*"images_per_s":\([0-9.e+-]*\).*/\1/' | awk '{printf "%.2f", $1}'; }
  measure() {
    mkdir -p "$2"
    launch/local.sh -n "$1" bench --size 128 --threads 1 --batch-size "$3" --steps 8 --sgemm-size 0 --json > "$2/out.json"
  }
elif [ "$data" = --synthetic ]; then
  mpicc -O3 -march=native -o "$work/sync_step" tools/machine/sync_step.c
  rate() { awk '{printf "%.2f", $1}' "$1/out.txt"; }
  measure() {
    mkdir -p "$2"
    UNET_DIST_BIN="$work/sync_step" launch/local.sh -n "$1" "$3" 8 "${SEGMENTS:-29}" > "$2/out.txt"
  }
else
  # The images_per_s column, found by name in the header.
  rate() { awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "images_per_s") c = i } END { print $c }' "$1/history.csv"; }
  measure() { launch/local.sh -n "$1" train --data "$data" --run-dir "$2" --epochs 1 --threads 1 --batch-size "$3" --quiet; }
fi
declare -A rates
for r in $(seq "$repeats"); do
  measure 1 "$work/n1-$r" "$batch"; rates[n1]+="$(rate "$work/n1-$r") "
  measure 2 "$work/n2-$r" "$batch"; rates[n2]+="$(rate "$work/n2-$r") "
  measure 1 "$work/a-$r" $((batch / 2)) & first=$!
  measure 1 "$work/b-$r" $((batch / 2))
  wait "$first"
  pair=$(awk -v a="$(rate "$work/a-$r")" -v b="$(rate "$work/b-$r")" 'BEGIN {printf "%.2f", a + b}')
  rates[pair]+="$pair "
  echo "run $r: -n 1 $(rate "$work/n1-$r"), -n 2 $(rate "$work/n2-$r"), two independent -n 1 at batch $((batch / 2)): $(rate "$work/a-$r") + $(rate "$work/b-$r") = $pair images/s"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
m1=$(echo "${rates[n1]}" | median); m2=$(echo "${rates[n2]}" | median); mp=$(echo "${rates[pair]}" | median)
echo "median images/s: -n 1 $m1, -n 2 $m2, speed-up $(awk -v a="$m1" -v b="$m2" 'BEGIN {printf "%.2f", b / a}')x"
echo "machine reference: two independent runs $mp images/s, $(awk -v a="$m1" -v b="$mp" 'BEGIN {printf "%.2f", b / a}')x of -n 1; -n 2 reaches $(awk -v a="$mp" -v b="$m2" 'BEGIN {printf "%.0f", 100 * b / a}')% of it"
