#!/usr/bin/env python3
"""Loads a unet-dist checkpoint into the seed's PyTorch UNet and checks `unet-dist predict`'s
logits and masks against PyTorch's on the same slices (needs torch; not part of CI).

    python tools/check_predict_torch.py CHECKPOINT SLICE.npy [SLICE.npy ...]

Runs `.build/release/unet-dist predict --save-logits` into a temporary directory, then the seed's
model in eval mode, and prints the largest relative logit difference and the mask agreement.
Exits 1 when the logits differ by more than 1e-4 of their norm.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed_model import UNet  # noqa: E402


def main():
    ckpt, slices = sys.argv[1], sys.argv[2:]
    state = {k: v for k, v in load_file(ckpt).items() if not k.startswith("optimizer.")}
    model = UNet()
    model.load_state_dict(state)  # strict: every key and shape must match
    model.eval()
    binary = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".build", "release", "unet-dist")
    worst = 0.0
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([binary, "predict", "--checkpoint", ckpt, "--input", *slices, "--out", out, "--save-logits"],
                       check=True, stdout=subprocess.DEVNULL)
        for path in slices:
            stem = os.path.splitext(os.path.basename(path))[0]
            x = torch.from_numpy(np.load(path).astype(np.float32))[None, None]
            with torch.no_grad():
                ref = model(x)[0].numpy()
            ours = np.load(os.path.join(out, stem + "_logits.npy"))
            mask = np.load(os.path.join(out, stem + "_mask.npy"))
            rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
            agree = float((mask == ref.argmax(0)).mean())
            worst = max(worst, rel)
            print(f"{stem}: |ours - torch| / |torch| = {rel:.2e}, masks agree on {100 * agree:.3f}% of pixels")
    print(f"worst relative logit difference {worst:.2e}")
    sys.exit(0 if worst < 1e-4 else 1)


main()
