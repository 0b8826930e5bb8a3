#!/usr/bin/env bash
# Puts unet-dist on PATH, so that `mpirun -n 8 unet-dist train ...` finds it on every node that
# sees PREFIX:   launch/install.sh [PREFIX]     (default /usr/local: /usr/local/bin/unet-dist)
#
# The Swift runtime is linked in statically: a node needs Debian's OpenBLAS, Open MPI and zlib
# (launch/install-deps.sh), not the Swift toolchain. The build has its own folder
# (.build/install), apart from the one the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-/usr/local}"
launch/install-deps.sh
swift build -c release --static-swift-stdlib --product unet-dist --scratch-path .build/install 2>&1 | grep -vE "^\[[0-9]+/[0-9]+\]|use of .mktemp. is dangerous" || true
bin=.build/install/release/unet-dist
test -x "$bin" || { echo "error: the build failed" >&2; exit 1; }
mkdir -p "$prefix/bin"
# Copied beside the target and renamed over it: a run that has the old binary open keeps it.
tmp="$prefix/bin/.unet-dist.tmp-$$"
install -m 755 "$bin" "$tmp"
mv -f "$tmp" "$prefix/bin/unet-dist"
echo "installed $prefix/bin/unet-dist ($("$prefix/bin/unet-dist" --version))"
case ":$PATH:" in *":$prefix/bin:"*) ;; *) echo "note: $prefix/bin is not on PATH" ;; esac
