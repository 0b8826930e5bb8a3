#!/usr/bin/env bash
# Demo data: the ICBM152 2009 brain template (T1 with gray- and white-matter probability maps,
# inside the nilearn wheel on PyPI) cut into SIZE x SIZE slices by `unet-dist prepare`. Where PyPI
# cannot be reached, synthetic phantoms from `unet-dist synth` instead, and it says so.
#
#   launch/fetch-icbm.sh OUT [SIZE]        (SIZE defaults to 128; run launch/build.sh first)
#
# Environment: UNET_DIST (the binary, default .build/release/unet-dist), WHEEL_CACHE (where the
# wheel is kept between runs, default data/wheel), PYTHON (default python3, for pip).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: launch/fetch-icbm.sh OUT [SIZE]}
size=${2:-128}
bin=${UNET_DIST:-$root/.build/release/unet-dist}
cache=${WHEEL_CACHE:-$root/data/wheel}
python=${PYTHON:-python3}
[ -x "$bin" ] || { echo "error: $bin not found: run launch/build.sh first" >&2; exit 1; }

newest_wheel() { ls "$cache"/nilearn-*.whl 2>/dev/null | sort -V | tail -n 1 || true; }

mkdir -p "$cache"
wheel=$(newest_wheel)
if [ -z "$wheel" ]; then
  # Few retries and a short timeout: offline, pip would otherwise wait for minutes.
  "$python" -m pip download --quiet --no-deps --retries 1 --timeout 20 nilearn -d "$cache" || true
  wheel=$(newest_wheel)
fi
if [ -z "$wheel" ]; then
  echo "PyPI unreachable: using synthetic phantoms instead"
  exec "$bin" synth --out "$out" --count 400 --size "$size"
fi

# Unpacked beside the wheel and kept, so the manifest's source paths stay valid.
vols="${wheel%.whl}-icbm152"
mkdir -p "$vols"
members=()
for kind in t1 gm wm; do
  members+=("nilearn/datasets/data/mni_icbm152_${kind}_tal_nlin_sym_09a_converted.nii.gz")
done
if command -v unzip >/dev/null; then
  unzip -q -o -j "$wheel" "${members[@]}" -d "$vols" \
    || { echo "error: $wheel lacks the ICBM152 2009 volumes (${members[*]})" >&2; exit 1; }
else
  "$python" - "$wheel" "$vols" "${members[@]}" <<'PY'
import os, sys, zipfile
wheel, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with open(os.path.join(dest, os.path.basename(name)), "wb") as f:
            f.write(z.read(name))
PY
fi
volume() { echo "$vols/mni_icbm152_$1_tal_nlin_sym_09a_converted.nii.gz"; }
echo "$(basename "$wheel"): ICBM152 2009 template"
"$bin" prepare --t1 "$(volume t1)" --gm "$(volume gm)" --wm "$(volume wm)" --out "$out" --size "$size"
