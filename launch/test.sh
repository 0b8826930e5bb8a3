#!/usr/bin/env bash
# The README's second command: installs what is missing and runs the whole test suite
# (release build: the numeric kernels are far too slow in debug). Exits with the test run's
# status, or 1 where the run passed but skipped a test that this machine can run: a skip is
# accepted only for a test of instructions the CPU lacks (no avx512f, avx512_bf16 or avx2 in
# /proc/cpuinfo). Ends with "N passed, N failed, N skipped" after XCTest's own closing lines.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/install-deps.sh --test
# `swift test` builds everything, the binary that the command tests run included, in the same
# folder as `swift build -c release` but with -enable-testing: a plain build before it would
# be compiled again from scratch.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift test -c release -Xswiftc -enable-testing --disable-swift-testing 2>&1 | tee "$log" \
  | grep -vE "^Test Case '.*' (started|passed)|^\[[0-9]+/[0-9]+\]"
status=${PIPESTATUS[0]}
set -e

# Each test's end, as XCTest prints it: "Test Case 'Class.test' passed|failed|skipped (T seconds)",
# and each skip's reason: "FILE:LINE: Class.test : Test skipped - REASON".
count() { grep -cE "^Test Case '[^']+' $1 \(" "$log" || true; }
passed=$(count passed) failed=$(count failed) skipped=$(count skipped)
reasons=$(grep -E ": Test skipped - " "$log" || true)
# A skip is accepted only where the CPU lacks what the test needs: AVX-512 for the AVX-512
# kernel tests, AVX512_BF16 for the tests of the bf16 instructions, AVX2 (with FMA) for the
# tests that compare the bf16 kernel sets, either of the two for the other vector kernel tests.
accepted_reasons=()
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then cpu="has AVX-512"; else
  cpu="has no AVX-512"
  accepted_reasons+=('^.*: VectorKernelTests\.[A-Za-z0-9_]+ : Test skipped - AVX-512 kernels: this CPU has no AVX-512$')
fi
if grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null; then cpu="$cpu and AVX512_BF16"; else
  cpu="$cpu, no AVX512_BF16"
  accepted_reasons+=('^.*: [A-Za-z0-9_]+\.[A-Za-z0-9_]+ : Test skipped - this CPU has no AVX512_BF16$')
fi
if ! { grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; } 2>/dev/null; then
  cpu="$cpu, no AVX2"
  accepted_reasons+=('^.*: [A-Za-z0-9_]+\.[A-Za-z0-9_]+ : Test skipped - this CPU has no AVX2$')
  # The tests of every vector kernel set, AVX2 and AVX-512 alike, where there is neither.
  grep -qw avx512f /proc/cpuinfo 2>/dev/null ||
    accepted_reasons+=('^.*: VectorKernelTests\.[A-Za-z0-9_]+ : Test skipped - vector kernels: this CPU has neither AVX2 nor AVX-512$')
fi
accepted=0 others=$reasons
for reason in "${accepted_reasons[@]}"; do
  accepted=$((accepted + $(printf '%s\n' "$reasons" | grep -cE "$reason" || true)))
  others=$(printf '%s\n' "$others" | grep -vE "$reason" || true)
done

echo
echo "$((passed + failed + skipped)) tests ran; $skipped skipped, $accepted of them for instructions this CPU lacks (this CPU $cpu)"
if [ "$skipped" -gt "$accepted" ]; then
  echo "error: $((skipped - accepted)) skipped test(s) that this machine can run; a skip is accepted only for a test of instructions the CPU lacks (AVX-512, AVX512_BF16, AVX2):" >&2
  if [ -n "$others" ]; then printf '%s\n' "$others" | sed 's/^/  /' >&2
  else grep -E "^Test Case '[^']+' skipped \(" "$log" | sed 's/^/  /' >&2; fi
  [ "$status" -ne 0 ] || status=1
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
