#!/usr/bin/env python3
"""Writes a four-subject cohort made from the ICBM152 template (launch/fetch-icbm.sh unpacks it),
for trying `prepare --cohort` on real anatomy: the template as it is, mirrored left to right,
shifted within its field of view, and with scaled intensities stored as int16 in reversed
slice order (its affine says so, so the anatomy is the same). Each subject keeps the template's
gray- and white-matter maps, moved with it. Writes OUT/<subject>_{T1,gm,wm}.nii.gz and
OUT/cohort.csv.

    python3 tools/make_icbm_cohort.py ICBM_DIR OUT      (numpy and nibabel)
"""
import os
import sys

import nibabel as nib
import numpy as np

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
name = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
vols = {k: nib.load(os.path.join(src, name.format(k))) for k in ("t1", "gm", "wm")}
affine = vols["t1"].affine


def shifted(a):
    # 12 voxels towards anterior, 8 down, zeros where the image moved away.
    b = np.zeros_like(a)
    b[:, 12:, :-8] = a[:, :-12, 8:]
    return b


subjects = {
    "icbm-template": (lambda a: a, affine, np.float32, 1.0),
    "icbm-mirrored": (lambda a: a[::-1, :, :], affine, np.float32, 1.0),
    "icbm-shifted": (shifted, affine, np.float32, 1.0),
    # Slices stored top to bottom: voxel k is the old depth-1-k, so the affine's third column
    # turns round and its origin moves to the old last slice.
    "icbm-scaled": (lambda a: a[:, :, ::-1], affine @ np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, vols["t1"].shape[2] - 1], [0, 0, 0, 1]]), np.int16, 37.5),
}
rows = ["subject,t1,gm,wm"]
for subject, (move, aff, t1_type, scale) in subjects.items():
    for kind in ("t1", "gm", "wm"):
        data = move(np.asarray(vols[kind].dataobj, dtype=np.float32))
        if kind == "t1":
            data = np.round(data * scale).astype(t1_type) if t1_type != np.float32 else (data * scale).astype(np.float32)
        img = nib.Nifti1Image(np.ascontiguousarray(data), aff)
        img.set_sform(aff, code=1)
        nib.save(img, os.path.join(out, f"{subject}_{kind.upper() if kind == 't1' else kind}.nii.gz"))
    rows.append(f"{subject},{subject}_T1.nii.gz,{subject}_gm.nii.gz,{subject}_wm.nii.gz")
with open(os.path.join(out, "cohort.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")
print(f"wrote {len(subjects)} subjects and cohort.csv to {out}")
