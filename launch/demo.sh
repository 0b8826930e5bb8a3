#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, gets real brain slices (the
# ICBM152 2009 template inside the nilearn wheel on PyPI, cut into 128x128 slices), and trains
# for a few epochs on 2 ranks.  Usage: launch/demo.sh [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
launch/install-deps.sh
launch/build.sh
data=data/icbm128
if [ ! -d "$data/MRIs" ]; then
  mkdir -p data/wheel
  if ! ls data/wheel/nilearn-*.whl >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps nilearn -d data/wheel \
      || { echo "error: could not download the nilearn wheel from PyPI (needed for the demo data)" >&2; exit 1; }
  fi
  python3 tools/cut_icbm_slices.py --wheel-dir data/wheel --out "$data" --size 128
fi
launch/local.sh -n 2 train --data "$data" --run-dir runs/demo --epochs "${1:-3}" --overwrite
echo "history: runs/demo/history.csv, checkpoints: runs/demo/checkpoints/"
