#!/usr/bin/env bash
# The overlap measurements behind docs/scaling.md (Overlap), into OUT_DIR (root: network
# namespaces and tc): `unet-dist bench` on the namespace cluster (launch/netns-cluster.sh, two
# hosts, 1 rank x 1 thread each) under one link profile, both models at 128, the gradient sum
# after the backward (--bucket-mb 0) and in buckets during it (--bucket-mb MIB), alternated
# within each round so that both see the same load; and `bench` on one rank with --bucket-mb MIB
# at 128 and 394, for each bucket how long before the backward's end it starts (the leads the
# projection hides the buckets' sums in). Then:
#   python3 tools/scaling/model.py DIR  (DIR: measure.sh's files and these together)
#
#   tools/scaling/overlap.sh OUT_DIR [ROUNDS] [MIB] [PROFILE]
#
# PROFILE: 1g (default) or 10g, the token bucket filters of tools/scaling/measure.sh. A file
# already in OUT_DIR is kept and its run skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: tools/scaling/overlap.sh OUT_DIR [ROUNDS] [MIB] [PROFILE]}"
rounds="${2:-5}" mib="${3:-0.5}" profile="${4:-1g}"
mkdir -p "$out"
bin=.build/release/unet-dist
[ -x "$bin" ] || { echo "build first: swift build -c release" >&2; exit 1; }
declare -A qdisc=([10g]="tbf rate 10gbit burst 32kb latency 5ms" [1g]="tbf rate 1gbit burst 16kb latency 20ms")
log() { echo "$(date -u +%T) $*" | tee -a "$out/log.txt" >&2; }
for r in $(seq "$rounds"); do
  for model in unet unet-resnet; do
    if [ "$model" = unet ]; then steps=5; else steps=3; fi
    for b in 0 "$mib"; do
      f="$out/overlap_${profile}_${model}_128_mb${b}_r$r.json"
      [ -s "$f" ] && continue
      log "bench 2 hosts $profile $model 128 --bucket-mb $b round $r"
      UNET_DIST_QDISC="${qdisc[$profile]}" timeout 900 launch/netns-cluster.sh -n 2 bench --model "$model" \
        --size 128 --batch-size 8 --steps "$steps" --threads 1 --sgemm-size 0 --bucket-mb "$b" --json \
        | tail -1 > "$f.tmp"
      mv "$f.tmp" "$f"
    done
  done
done
# One rank, 1 thread: when each bucket would start (`bucket_lead_ms`), 128 batch 2 and 394 batch 1.
for model in unet unet-resnet; do
  for size in 128 394; do
    if [ "$size" = 128 ]; then batch=2 steps=5; else batch=1 steps=3; fi
    f="$out/bench1ov_${model}_${size}.json"
    [ -s "$f" ] && continue
    log "bench 1 rank $model $size batch $batch --bucket-mb $mib"
    "$bin" bench --model "$model" --size "$size" --batch-size "$batch" --steps "$steps" --threads 1 \
      --sgemm-size 0 --bucket-mb "$mib" --json > "$f.tmp"
    mv "$f.tmp" "$f"
  done
done
log done
