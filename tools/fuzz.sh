#!/usr/bin/env bash
# Fuzzes the .npy, NIfTI, MGH and safetensors readers with libFuzzer (+ AddressSanitizer) for a set
# time each, starting from the committed corpus in Fuzz/corpus/TARGET with the dictionary
# Fuzz/TARGET.dict. New inputs collect in .build-fuzz/corpus-TARGET; at the end those that reach
# code the committed corpus does not are merged into it.
#   tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      targets: npy nifti mgh safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"; shift || true
targets=("${@:-npy nifti mgh safetensors}")
out=.build-fuzz; mkdir -p "$out"
# The readers are plain Swift over Foundation and zlib: compile them with the entry point, with
# the optimization users get for the Formats target (`swift build -c release`: -O, whole-module,
# overflow and bounds checks kept), plus the fuzzer's instrumentation and AddressSanitizer.
swiftc -O -wmo -swift-version 5 -sanitize=fuzzer,address -parse-as-library -module-name Formats \
  -I Sources/CZlib -Xcc -fmodule-map-file=Sources/CZlib/module.modulemap \
  Sources/Formats/*.swift Fuzz/FuzzReaders.swift -lz -o "$out/fuzz-readers"
for t in ${targets[@]}; do
  mkdir -p "Fuzz/corpus/$t" "$out/corpus-$t" "$out/crashes-$t"
  echo "== $t: $seconds s"
  # -timeout: an input that takes seconds is a finding too (a size that went unchecked).
  FUZZ_TARGET="$t" "$out/fuzz-readers" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=5 \
    -dict="Fuzz/$t.dict" -print_final_stats=1 -artifact_prefix="$out/crashes-$t/" "$out/corpus-$t" "Fuzz/corpus/$t" 2>&1 \
    | grep -E "^#[0-9]+[[:space:]]+DONE|^Done|stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|crash-|leak-|timeout-|oom-" || true
  FUZZ_TARGET="$t" "$out/fuzz-readers" -merge=1 -max_len=65536 -rss_limit_mb=2048 -timeout=5 \
    "Fuzz/corpus/$t" "$out/corpus-$t" 2>&1 | grep -E "MERGE-OUTER: [0-9]+ new files" || true
  ls "$out/crashes-$t" | head -5
done
