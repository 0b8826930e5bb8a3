#!/usr/bin/env python3
"""Writes Tests/Fixtures/bicubic_resize.json: images resized by PyTorch's
F.interpolate(mode="bicubic", align_corners=False), the resampling `predict` brings class scores
back to a volume's grid with. Up and down, square and not, with steps and a single pixel line,
so that the border clamping and the kernel's negative lobes are both exercised.

    python tools/make_resize_fixtures.py      (needs torch)
"""
import json
import os

import torch
import torch.nn.functional as F

CASES = [((5, 7), (12, 9)), ((8, 8), (15, 15)), ((16, 16), (29, 29)), ((9, 6), (4, 5)), ((1, 6), (3, 11)),
         ((6, 6), (6, 6))]


def main():
    g = torch.Generator().manual_seed(0)
    cases = []
    for (h, w), (oh, ow) in CASES:
        x = torch.randn(h, w, generator=g)
        x[: h // 2, : w // 2] += 4  # a step: the kernel overshoots beside it
        y = F.interpolate(x[None, None], size=(oh, ow), mode="bicubic", align_corners=False)[0, 0]
        cases.append({"height": h, "width": w, "pixels": x.flatten().tolist(),
                      "out_height": oh, "out_width": ow, "out": y.flatten().tolist()})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "bicubic_resize.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {os.path.normpath(path)}: {len(cases)} cases")


if __name__ == "__main__":
    main()
