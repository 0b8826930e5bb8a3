#!/usr/bin/env bash
# The README's second command: installs what is missing and runs the whole test suite
# (release build: the numeric kernels are far too slow in debug).
set -euo pipefail
cd "$(dirname "$0")/.."
launch/install-deps.sh --test
swift build -c release 2>&1 | grep -vE "^\[[0-9]+/[0-9]+\]" || true
swift test -c release -Xswiftc -enable-testing --disable-swift-testing 2>&1 \
  | grep -vE "^Test Case '.*' (started|passed)|^\[[0-9]+/[0-9]+\]"
exit "${PIPESTATUS[0]}"
