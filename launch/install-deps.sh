#!/usr/bin/env bash
# Installs the Debian packages unet-dist builds and runs with (skipped when already there);
# with --test also what the test suite uses (headless Chromium renders the run report;
# TensorBoard's own reader, from PyPI, reads the run's event files).
# Swift itself comes with the machine (swift.org toolchain on PATH).
set -euo pipefail
packages=(libopenblas-dev libopenmpi-dev openmpi-bin zlib1g-dev pkg-config python3 python3-numpy iproute2 util-linux)
[ "${1:-}" = "--test" ] && packages+=(chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--test" ] && ! python3 -c "import tensorboard" 2>/dev/null; then
  echo "installing: tensorboard (pip)"
  # A Debian-managed python3 refuses plain pip installs (PEP 668); a pyenv or venv python takes them.
  python3 -m pip install --quiet tensorboard 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages tensorboard
fi
command -v swift >/dev/null || { echo "error: swift is not on PATH (install the toolchain from swift.org)" >&2; exit 1; }
