#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, gets real brain slices (the
# ICBM152 2009 template inside the nilearn wheel on PyPI, cut into 128x128 slices by
# launch/fetch-icbm.sh; synthetic phantoms where PyPI cannot be reached), and trains for a few
# epochs on 2 ranks.  Usage: launch/demo.sh [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
launch/install-deps.sh
launch/build.sh
data=data/icbm128
if [ ! -d "$data/MRIs" ]; then
  launch/fetch-icbm.sh "$data" 128
fi
launch/local.sh -n 2 train --data "$data" --run-dir runs/demo --epochs "${1:-3}" --overwrite
echo "history: runs/demo/history.csv, checkpoints: runs/demo/checkpoints/"
