#!/usr/bin/env bash
# The measurements behind docs/scaling.md, into OUT_DIR (root: network namespaces and tc):
#   - allreduce_bench sweeps on the namespace cluster (launch/netns-cluster.sh: 2 and 4 ranks,
#     split over two namespace hosts) under each link profile, and one step's allreduces replayed
#     without its arithmetic (the counts from `bench --json`);
#   - `unet-dist bench` on the two hosts, 1 rank x 1 thread each, both models at 128 and 394, the
#     gradient sum in one allreduce after the backward (--bucket-mb 0; overlap.sh times buckets);
#   - `unet-dist bench` on one rank, 1 thread, two per-rank batches: a step's compute on one core
#     (its CPU time per step, which the machine's load does not inflate as it does wall time).
# Then: python3 tools/scaling/model.py OUT_DIR
#
#   tools/scaling/measure.sh OUT_DIR [REPEATS]
#
# A file already in OUT_DIR is kept and its measurement skipped (an interrupted run continues).
#
# Link profiles (tc qdiscs on both veth ends, see launch/netns-cluster.sh). This kernel has no
# sch_netem, so the profiles are token bucket filters: a rate, and no delay added to the veth's
# own latency (docs/scaling.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: tools/scaling/measure.sh OUT_DIR [REPEATS]}"
repeats="${2:-3}"
mkdir -p "$out"
bin=.build/release/unet-dist
[ -x "$bin" ] || { echo "build first: swift build -c release" >&2; exit 1; }
mpicc -O2 -o "$out/allreduce_bench" tools/scaling/allreduce_bench.c
declare -A qdisc=(
  [veth]=""
  [10g]="tbf rate 10gbit burst 32kb latency 5ms"
  [1g]="tbf rate 1gbit burst 16kb latency 20ms"
)
printf '%s\n' "10g=${qdisc[10g]}" "1g=${qdisc[1g]}" > "$out/profiles.txt"
log() { echo "$(date -u +%T) $*" | tee -a "$out/log.txt" >&2; }
have() { [ -s "$1" ] && log "kept $1"; }
cluster() {  # PROFILE N ARGS...: launch/netns-cluster.sh under the profile
  local p="$1" n="$2"; shift 2
  UNET_DIST_QDISC="${qdisc[$p]}" timeout 900 launch/netns-cluster.sh -n "$n" "$@"
}
micro() { UNET_DIST_BIN="$out/allreduce_bench" cluster "$@"; }

# One step's allreduce counts (they do not depend on the image size).
for model in unet unet-resnet; do
  have "$out/counts_$model.json" || "$bin" bench --model "$model" --size 32 --batch-size 1 --steps 1 --sgemm-size 0 --threads 1 --json > "$out/counts_$model.json"
done
counts() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(','.join(map(str, d[sys.argv[2]])))" "$out/counts_$1.json" "$2"; }

for p in veth 10g 1g; do
  f="$out/sweep_${p}_n2.csv"; have "$f" || { log "sweep $p n=2"; micro "$p" 2 sweep 4194304 31 > "$f"; }
  # 4 ranks are 4 busy-waiting processes on this machine's 2 vCPUs: small sizes, few rounds.
  f="$out/sweep_${p}_n4.csv"; have "$f" || { log "sweep $p n=4"; micro "$p" 4 sweep 4096 7 > "$f"; }
  for model in unet unet-resnet; do
    doubles="$(counts "$model" allreduce_double_counts)"
    f="$out/replay_${p}_${model}.csv"
    have "$f" || { log "replay $p $model"; micro "$p" 2 replay "$doubles" "$(counts "$model" allreduce_float_counts)" 21 > "$f"; }
    # BatchNorm's reductions alone (a 1-element gradient): calls short enough to escape the load.
    f="$out/replaybn_${p}_${model}.csv"
    have "$f" || { log "replay BatchNorm $p $model"; micro "$p" 2 replay "$doubles" 1 21 > "$f"; }
  done
done

for r in $(seq "$repeats"); do
  for model in unet unet-resnet; do
    for size in 128 394; do
      if [ "$size" = 128 ]; then batch=8 steps=5; else batch=2 steps=3; fi
      for p in 10g 1g; do
        f="$out/bench2_${p}_${model}_${size}_r$r.json"
        have "$f" && continue
        log "bench 2 hosts $p $model $size round $r"
        cluster "$p" 2 bench --model "$model" --size "$size" --batch-size "$batch" --steps "$steps" \
          --threads 1 --sgemm-size 0 --bucket-mb 0 --json | tail -1 > "$f"
      done
    done
  done
done

# A step's compute on one core: one rank, 1 thread, two per-rank batches (linear in the batch).
for model in unet unet-resnet; do
  for size in 128 394; do
    if [ "$size" = 128 ]; then batches="2 8"; steps=5; else batches="1 2"; steps=3; fi
    for b in $batches; do
      f="$out/bench1_${model}_${size}_b$b.json"
      have "$f" && continue
      log "bench 1 rank $model $size batch $b"
      "$bin" bench --model "$model" --size "$size" --batch-size "$b" --steps "$steps" --threads 1 \
        --sgemm-size 0 --json > "$f"
    done
  done
done
log done
