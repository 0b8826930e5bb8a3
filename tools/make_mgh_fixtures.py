#!/usr/bin/env python3
"""Writes Tests/Fixtures/mgh/: small FreeSurfer MGH volumes written by nibabel, one per voxel type
FreeSurfer writes (uchar, short, int, float, ushort), with oblique orientations and unequal voxel
sizes, gzipped (.mgz) and plain (.mgh), plus nilearn's own test.mgz (4-D, two frames) copied from
its wheel; and expected.json: what nibabel reads from each (shape, affine, every voxel in
x-fastest order), for the reader to match.

    python3 tools/make_mgh_fixtures.py NILEARN_WHEEL      (numpy and nibabel)
"""
import json
import os
import sys
import zipfile

import nibabel as nib
import numpy as np

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "mgh")
os.makedirs(out, exist_ok=True)


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


rng = np.random.default_rng(7)
volumes = [
    # name, dtype, shape, values low..high, voxel sizes, rotation angles, translation
    ("uchar.mgz", np.uint8, (6, 5, 4), (0, 255), (1.0, 1.0, 1.0), (0, 0, 0), (-3, 4, 5)),
    ("short.mgz", np.int16, (5, 7, 3), (-32768, 32767), (0.9, 1.2, 2.5), (0.3, -0.2, 0.1), (12.5, -7, 30)),
    ("int.mgz", np.int32, (4, 3, 6), (-(1 << 24), 1 << 24), (1.5, 1.5, 1.5), (0, 0.5, 0), (0, 0, 0)),
    ("float.mgz", np.float32, (7, 4, 5), None, (1.0, 0.8, 1.3), (-0.4, 0.2, 0.9), (90.25, -126, 72)),
    ("ushort.mgz", np.uint16, (3, 6, 4), (0, 65535), (2.0, 1.0, 0.5), (1.2, 0, -0.3), (1, 2, 3)),
    ("float.mgh", np.float32, (5, 5, 2), None, (1.0, 1.0, 1.0), (0, 0, np.pi / 2), (-10, 10, 0)),
]
expected = {}
for name, dtype, shape, bounds, zooms, angles, shift in volumes:
    if bounds is None:
        data = (rng.standard_normal(shape) * 100).astype(np.float32)
    else:
        data = rng.integers(bounds[0], bounds[1], size=shape, endpoint=True).astype(dtype)
    # LIA, FreeSurfer's conformed orientation, turned by the angles: every axis oblique.
    lia = np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = rotation(*angles) @ lia @ np.diag(zooms)
    affine[:3, 3] = shift
    img = nib.MGHImage(data, affine)
    img.header.set_data_dtype(dtype)
    nib.save(img, os.path.join(out, name))

with zipfile.ZipFile(sys.argv[1]) as wheel:
    with open(os.path.join(out, "test.mgz"), "wb") as f:
        f.write(wheel.read("nilearn/datasets/data/test.mgz"))

for name in sorted(os.listdir(out)):
    if not name.endswith((".mgz", ".mgh")):
        continue
    img = nib.load(os.path.join(out, name))
    data = np.asarray(img.dataobj)
    expected[name] = {
        "shape": [int(s) for s in data.shape],
        "dtype": str(data.dtype),
        "affine": [[float(v) for v in row] for row in img.affine],
        # Fortran order: x fastest, then y, z and the frame, as the file stores them.
        "values": [float(v) for v in data.ravel(order="F")],
    }
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
    f.write("\n")
print(f"wrote {len(expected)} volumes and expected.json to {os.path.normpath(out)}")
