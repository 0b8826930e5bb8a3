#!/usr/bin/env bash
# Release build of unet-dist (debug builds are far too slow for the numeric kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release 2>&1 | grep -vE "^\[[0-9]+/[0-9]+\]" || true
test -x .build/release/unet-dist || { echo "error: build failed" >&2; exit 1; }
