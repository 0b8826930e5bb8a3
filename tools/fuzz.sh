#!/usr/bin/env bash
# Fuzzes the .npy, NIfTI and safetensors readers with libFuzzer (+ AddressSanitizer) for a set
# time each, starting from the committed corpus in Fuzz/corpus/TARGET (new finds are added there).
#   tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      targets: npy nifti safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"; shift || true
targets=("${@:-npy nifti safetensors}")
out=.build-fuzz; mkdir -p "$out"
# The readers are plain Swift over Foundation and zlib: compile them with the entry point.
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name Formats \
  -I Sources/CZlib -Xcc -fmodule-map-file=Sources/CZlib/module.modulemap \
  Sources/Formats/*.swift Fuzz/FuzzReaders.swift -lz -o "$out/fuzz-readers"
for t in ${targets[@]}; do
  mkdir -p "Fuzz/corpus/$t" "$out/crashes-$t"
  echo "== $t: $seconds s"
  FUZZ_TARGET="$t" "$out/fuzz-readers" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
    -artifact_prefix="$out/crashes-$t/" "Fuzz/corpus/$t" 2>&1 | grep -E "^Done|ERROR|SUMMARY|crash-|leak-|timeout-|oom-" || true
  ls "$out/crashes-$t" | head -5
done
