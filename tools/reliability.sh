#!/usr/bin/env bash
# The long reliability checks, on a release build (swift build -c release, tests built):
#
#   tools/reliability.sh faults [ROUNDS]          the fault tests ROUNDS times over (default 5):
#                                                  SIGTERM, SIGKILL of rank 0/1 in training,
#                                                  evaluation and checkpoint writing, full disk
#   tools/reliability.sh soak [EPOCHS] [RANKS]    hundreds of epochs on the 48x48 fixture set
#                                                  (default 300 epochs, 4 ranks), sampling every
#                                                  rank's RSS; prints start/end/max per rank
#   tools/reliability.sh all
#
# The fast versions of the fault tests run in the test suite (Tests/CLITests/StopAndResumeTests).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${UNET_DIST_BIN:-$PWD/.build/release/unet-dist}"
data="$PWD/Tests/Fixtures/seeddata"

faults() {
  local rounds="${1:-5}" failed=0
  for ((i = 1; i <= rounds; i++)); do
    echo "== fault round $i/$rounds"
    if ! swift test -c release -Xswiftc -enable-testing --disable-swift-testing --skip-build \
         --filter 'CLITests.StopAndResumeTests|CLITests.FaultAndClusterTests/testKilled|ModelTests.StopTests' 2>&1 \
         | grep -E "error:|Executed .* tests" | tail -3; then failed=1; fi
  done
  return $failed
}

# VmRSS of each rank every second; the first sample after epoch 1 is the baseline (the first
# epoch allocates every buffer), so that growth after it shows a leak.
soak() {
  local epochs="${1:-300}" ranks="${2:-4}"
  local dir; dir="$(mktemp -d)"
  local samples="$dir/rss.tsv"
  echo "== soak: $epochs epochs, $ranks ranks, run directory $dir/run"
  local flags=(--bind-to none)
  [ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
  [ "$ranks" -gt "$(nproc)" ] && flags+=(--oversubscribe)
  local t0; t0=$(date +%s)
  mpirun "${flags[@]}" -n "$ranks" "$bin" train --data "$data" --run-dir "$dir/run" --epochs "$epochs" \
    --batch-size 4 --test-count 2 --threads 1 --checkpoint-every 1 --quiet </dev/null &
  local job=$!
  while kill -0 "$job" 2>/dev/null; do
    local epoch=0
    [ -f "$dir/run/history.csv" ] && epoch=$(($(wc -l <"$dir/run/history.csv") - 1))
    for p in $(pgrep -P "$job" 2>/dev/null); do
      local rank rss
      rank=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p') || continue
      rss=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
      [ -n "$rank" ] && [ -n "$rss" ] && printf '%s\t%s\t%s\t%s\n' "$(($(date +%s) - t0))" "$epoch" "$rank" "$rss" >>"$samples"
    done
    sleep 1
  done
  local status=0
  wait "$job" || status=$?
  echo "exit status $status after $(($(date +%s) - t0)) s; epochs in history: $(($(wc -l <"$dir/run/history.csv") - 1))"
  printf "rank  samples  RSS MiB at epoch: first (epoch)  last (epoch)  max   growth first->last\n"
  awk -F'\t' '$2 >= 1 {
      r = $3; if (!(r in first)) { first[r] = $4; firstEpoch[r] = $2 }
      last[r] = $4; lastEpoch[r] = $2; if ($4 > max[r]) max[r] = $4; n[r]++
    }
    END {
      for (r in first) printf "%4s  %7d  %15.1f (%4d)  %6.1f (%4d)  %5.1f  %+.1f MiB\n", r, n[r], first[r]/1024, firstEpoch[r],
        last[r]/1024, lastEpoch[r], max[r]/1024, (last[r]-first[r])/1024
    }' "$samples" | sort
  rm -rf "$dir"
  return $status
}

case "${1:-all}" in
  faults) faults "${2:-5}" ;;
  soak) soak "${2:-300}" "${3:-4}" ;;
  all) faults "${2:-5}"; soak 300 4 ;;
  *) echo "usage: $0 faults [ROUNDS] | soak [EPOCHS] [RANKS] | all" >&2; exit 2 ;;
esac
