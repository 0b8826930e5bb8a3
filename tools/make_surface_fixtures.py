#!/usr/bin/env python3
"""Writes Tests/Fixtures/surface_distances.json: HD95 and the average surface distance of mask
pairs, computed with SciPy's Euclidean distance transform (an independent method: ours measures
edge to edge directly), as MONAI's compute_hausdorff_distance(percentile=95) and
compute_average_surface_distance(symmetric=True) define them:

  edges(m)  = m and not binary_erosion(m)   (4-connected, outside the image counts as background)
  d(a -> b) = for each edge pixel of a, the distance to the nearest edge pixel of b, in mm
  HD95      = max(percentile95 d(pred -> truth), percentile95 d(truth -> pred))  (numpy's linear)
  ASD       = mean of d(pred -> truth) and d(truth -> pred) together
  both empty: 0; one empty: undefined (NaN).

    python3 tools/make_surface_fixtures.py      (numpy and scipy)
"""
import json
import os

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt


def edges(m):
    return m & ~binary_erosion(m)


def metrics(pred, truth, spacing):
    if not pred.any() and not truth.any():
        return 0.0, 0.0
    if not pred.any() or not truth.any():
        return None, None
    ep, et = edges(pred), edges(truth)
    d_pt = distance_transform_edt(~et, sampling=spacing)[ep]
    d_tp = distance_transform_edt(~ep, sampling=spacing)[et]
    hd95 = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    asd = np.concatenate([d_pt, d_tp]).mean()
    return float(hd95), float(asd)


def blob(rng, h, w, n):
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), bool)
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 6)
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return m


def main():
    rng = np.random.default_rng(3)
    h, w = 20, 24
    cases = []
    for spacing in [(1.0, 1.0), (0.8, 1.5)]:
        for n in [1, 3]:
            cases.append((blob(rng, h, w, n), blob(rng, h, w, n), spacing))
    a = blob(rng, h, w, 2)
    empty = np.zeros((h, w), bool)
    one = np.zeros((h, w), bool); one[5, 7] = True
    other = np.zeros((h, w), bool); other[15, 20] = True
    full = np.ones((h, w), bool)
    cases += [(a, a, (1.0, 1.0)), (empty, a, (1.0, 1.0)), (a, empty, (1.0, 1.0)), (empty, empty, (1.0, 1.0)),
              (one, other, (1.2, 0.7)), (full, a, (1.0, 1.0))]
    out = []
    for pred, truth, spacing in cases:
        hd95, asd = metrics(pred, truth, spacing)
        out.append({"height": h, "width": w, "spacing_rows_columns": list(spacing),
                    "pred": pred.astype(int).ravel().tolist(), "truth": truth.astype(int).ravel().tolist(),
                    "hd95": hd95, "asd": asd})
    path = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "surface_distances.json")
    with open(path, "w") as f:
        json.dump({"cases": out}, f)
        f.write("\n")
    print(f"wrote {path} ({len(out)} cases)")


if __name__ == "__main__":
    main()
