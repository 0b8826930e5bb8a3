#!/usr/bin/env python3
"""Cut 2-D training slices from the ICBM152 2009 template that ships in the nilearn wheel.

Needs only numpy and the standard library (zipfile, gzip, struct): the NIfTI-1 reader is
written here, so the script runs anywhere nilearn/nibabel are not installed.

    python tools/cut_icbm_slices.py --wheel-dir DIR --out DIR [--size 128]

DIR (--wheel-dir) holds a nilearn wheel, e.g. from
    pip download --no-deps nilearn -d DIR
The wheel carries nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz
(197 x 233 x 189, 1 mm, uint8; the gm/wm maps hold probabilities as 0..255).

For every slice along each of the three axes: brain fraction = #(gm + wm > 0.5) / #pixels of the
slice; slices with a fraction >= 0.02 are kept. Each kept slice is zero-padded to a square
(centered; an odd remainder goes to the bottom/right), resized to SIZE x SIZE with bilinear
interpolation (half-pixel centers, i.e. PyTorch's F.interpolate(mode="bilinear",
align_corners=False), no antialiasing) for T1, gm and wm, and then labelled per pixel by
argmax(wm, gm, 1 - wm - gm): 0 = white matter, 1 = gray matter, 2 = background (ties go to
the lower label). T1 is divided by the volume's maximum, so it lies in [0, 1].

Output, in the seed's layout (docs/design.md, section 3):
    OUT/MRIs/icbm_XXXX.npy           float32 SIZE x SIZE
    OUT/Segmentations/segm_XXXX.npy  uint8   SIZE x SIZE, values 0..2
    OUT/manifest.csv                 file,axis,slice
XXXX is the position of the slice after a deterministic shuffle (numpy RandomState(0)) of all
kept slices in (axis, slice) order, so the last 100 files in name order (the seed's test set)
mix the three axes.
"""
import argparse
import glob
import gzip
import os
import struct
import sys
import zipfile

import numpy as np

VOLUME = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
MIN_BRAIN_FRACTION = 0.02

# NIfTI-1 datatype codes -> numpy dtypes (byte order applied later).
NIFTI_DTYPES = {
    2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8",
    256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8",
}


def read_nifti1(raw):
    """Parse a NIfTI-1 single file (.nii bytes, already gunzipped).

    Returns (array in x, y, z[, t...] index order, float64 with scl_slope/scl_inter applied,
    integer dtype of the stored data)."""
    if len(raw) < 348:
        raise ValueError("file shorter than a NIfTI-1 header")
    for endian in "<>":
        if struct.unpack(endian + "i", raw[0:4])[0] == 348:
            break
    else:
        raise ValueError("sizeof_hdr is not 348: not a NIfTI-1 file")
    magic = raw[344:348]
    if magic not in (b"n+1\x00", b"ni1\x00"):
        raise ValueError(f"bad NIfTI-1 magic {magic!r}")
    if magic == b"ni1\x00":
        raise ValueError("header/image pair (.hdr/.img) not supported, need a single .nii")
    dim = struct.unpack(endian + "8h", raw[40:56])
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise ValueError(f"bad dim[0] = {ndim}")
    shape = tuple(int(d) for d in dim[1:1 + ndim])
    datatype, bitpix = struct.unpack(endian + "2h", raw[70:74])
    if datatype not in NIFTI_DTYPES:
        raise ValueError(f"unsupported NIfTI datatype {datatype}")
    dtype = np.dtype(NIFTI_DTYPES[datatype]).newbyteorder(endian)
    if dtype.itemsize * 8 != bitpix:
        raise ValueError(f"bitpix {bitpix} does not match datatype {datatype}")
    vox_offset, scl_slope, scl_inter = struct.unpack(endian + "3f", raw[108:120])
    offset = int(vox_offset)
    count = int(np.prod(shape))
    if offset + count * dtype.itemsize > len(raw):
        raise ValueError("file shorter than its header says")
    stored = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    # NIfTI stores the first index fastest: Fortran order.
    stored = stored.reshape(shape, order="F")
    data = stored.astype(np.float64)
    if scl_slope != 0 and np.isfinite(scl_slope) and not (scl_slope == 1 and scl_inter == 0):
        data = data * scl_slope + scl_inter
    return data, stored.dtype


def load_volume(zf, kind):
    name = VOLUME.format(kind)
    names = zf.namelist()
    if name not in names:
        # Fall back to any file that looks like the same template (names may drift between releases).
        cands = sorted(n for n in names
                       if "icbm152" in n and f"_{kind}_" in n and n.endswith((".nii.gz", ".nii")))
        if not cands:
            raise SystemExit(f"{name} not found in the wheel")
        print(f"note: {name} not in the wheel, using {cands[0]}", file=sys.stderr)
        name = cands[0]
    raw = zf.read(name)
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    data, dtype = read_nifti1(raw)
    return name, data, dtype


def as_probability(data, dtype):
    """gm/wm maps: probabilities in [0, 1]; the 'converted' files store 0..255 as uint8."""
    if data.max() > 1.0 + 1e-6:
        if np.issubdtype(dtype, np.integer):
            return data / float(np.iinfo(dtype).max)
        return data / data.max()
    return data


def pad_square(img):
    h, w = img.shape
    n = max(h, w)
    top, left = (n - h) // 2, (n - w) // 2
    out = np.zeros((n, n), dtype=img.dtype)
    out[top:top + h, left:left + w] = img
    return out


def _bilinear_weights(n_in, n_out):
    """Source indices and weights for half-pixel-center bilinear resampling (align_corners=False)."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1


def resize_bilinear(img, size):
    h, w = img.shape
    r0, r1, rw0, rw1 = _bilinear_weights(h, size)
    c0, c1, cw0, cw1 = _bilinear_weights(w, size)
    rows = img[r0, :] * rw0[:, None] + img[r1, :] * rw1[:, None]
    return rows[:, c0] * cw0[None, :] + rows[:, c1] * cw1[None, :]


def find_wheel(wheel_dir):
    wheels = sorted(glob.glob(os.path.join(wheel_dir, "nilearn-*.whl")))
    if not wheels:
        raise SystemExit(f"no nilearn-*.whl in {wheel_dir} "
                         f"(pip download --no-deps nilearn -d {wheel_dir})")
    return wheels[-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel-dir", required=True, help="folder holding nilearn-*.whl")
    ap.add_argument("--out", required=True, help="output folder (seed layout)")
    ap.add_argument("--size", type=int, default=128, help="output side in pixels (default 128)")
    args = ap.parse_args(argv)

    wheel = find_wheel(args.wheel_dir)
    print(f"wheel: {wheel}")
    with zipfile.ZipFile(wheel) as zf:
        vols = {}
        for kind in ("t1", "gm", "wm"):
            name, data, dtype = load_volume(zf, kind)
            print(f"  {name}: shape {data.shape}, stored {dtype}, range {data.min():g}..{data.max():g}")
            vols[kind] = (data, dtype)
    t1 = vols["t1"][0]
    shapes = {k: v[0].shape for k, v in vols.items()}
    if len(set(shapes.values())) != 1 or t1.ndim != 3:
        raise SystemExit(f"volumes differ in shape or are not 3-D: {shapes}")
    t1 = t1 / t1.max()
    gm = as_probability(*vols["gm"])
    wm = as_probability(*vols["wm"])
    brain = (gm + wm) > 0.5

    kept = []  # (axis, index)
    for axis in range(3):
        for i in range(t1.shape[axis]):
            frac = np.take(brain, i, axis=axis).mean()
            if frac >= MIN_BRAIN_FRACTION:
                kept.append((axis, i))
    n = len(kept)
    print(f"kept {n} of {sum(t1.shape)} slices "
          f"(per axis: {[sum(1 for a, _ in kept if a == ax) for ax in range(3)]})")

    perm = np.random.RandomState(0).permutation(n)
    os.makedirs(os.path.join(args.out, "MRIs"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "Segmentations"), exist_ok=True)
    width = max(4, len(str(n - 1)))
    counts = np.zeros(3, dtype=np.int64)
    rows = [None] * n
    for src, dst in enumerate(perm):
        axis, i = kept[src]
        t = resize_bilinear(pad_square(np.take(t1, i, axis=axis)), args.size)
        g = resize_bilinear(pad_square(np.take(gm, i, axis=axis)), args.size)
        w = resize_bilinear(pad_square(np.take(wm, i, axis=axis)), args.size)
        label = np.argmax(np.stack([w, g, 1.0 - w - g]), axis=0).astype(np.uint8)
        img = np.clip(t, 0.0, 1.0).astype(np.float32)
        ix = f"{dst:0{width}d}"
        name = f"icbm_{ix}.npy"
        np.save(os.path.join(args.out, "MRIs", name), img)
        np.save(os.path.join(args.out, "Segmentations", f"segm_{ix}.npy"), label)
        counts += np.bincount(label.ravel(), minlength=3)
        rows[dst] = (name, axis, i)
    with open(os.path.join(args.out, "manifest.csv"), "w") as f:
        f.write("file,axis,slice\n")
        for name, axis, i in rows:
            f.write(f"{name},{axis},{i}\n")

    frac = counts / counts.sum()
    print(f"wrote {n} pairs of {args.size}x{args.size} to {args.out}")
    print(f"class fractions: white {frac[0]:.4f}, gray {frac[1]:.4f}, background {frac[2]:.4f}")
    test_axes = [rows[k][1] for k in range(max(0, n - 100), n)]
    print(f"test set (last 100) per axis: {[test_axes.count(ax) for ax in range(3)]}")


if __name__ == "__main__":
    main()
