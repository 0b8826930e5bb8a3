#!/usr/bin/env python3
"""Full-width check of the seed's UNetResnet (torchvision's resnet18 encoder) both ways; the test
suite checks width 8 against committed fixtures, this script the real widths (needs torch and
torchvision; not part of CI).

    python tools/check_resnet_torch.py DATA_DIR [--steps 20]

1. PyTorch -> unet-dist: trains the seed's UNetResnet with Adam for --steps steps on the first 8
   pairs of DATA_DIR, saves its state_dict, and compares `unet-dist eval` on every pair with
   PyTorch's loss (float64, 1e-4 relative) and IoU (1e-3).
2. unet-dist -> PyTorch: one `unet-dist train --init` step from that state_dict, loaded back into
   PyTorch with strict=True, eval logits compared with `unet-dist predict --save-logits`.
Exits 1 if any check fails.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import seed_model  # noqa: E402

BINARY = os.path.join(HERE, "..", ".build", "release", "unet-dist")


def load(data):
    mris = sorted(os.listdir(os.path.join(data, "MRIs")))
    segs = {f.rsplit("_", 1)[1]: f for f in os.listdir(os.path.join(data, "Segmentations"))}
    xs, ts = [], []
    for f in mris:
        xs.append(torch.from_numpy(np.load(os.path.join(data, "MRIs", f)).astype(np.float32)).unsqueeze(0))
        ts.append(seed_model.one_hot(np.load(os.path.join(data, "Segmentations", segs[f.rsplit("_", 1)[1]]))))
    return torch.stack(xs), torch.stack(ts), [os.path.join(data, "MRIs", f) for f in mris]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    torch.manual_seed(0)
    x, target, paths = load(a.data)
    model = seed_model.UNetResnet(encoder=torchvision.models.resnet18())
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    model.train()
    for k in range(a.steps):
        idx = [(4 * k + i) % min(8, len(x)) for i in range(4)]
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(x[idx]), target[idx]).backward()
        opt.step()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "torch.safetensors")
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, ckpt)
        m64 = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            z = torch.cat([m64(x[i:i + 4].double()) for i in range(0, len(x), 4)])
        loss64 = float(F.binary_cross_entropy_with_logits(z, target.double()))
        pred, lab = z[:, :2] > 0, target[:, :2] > 0.5
        iou = float(((pred & lab).double().sum((2, 3)) + 1e-6).div((pred | lab).double().sum((2, 3)) + 1e-6).mean())
        out = subprocess.run([BINARY, "eval", "--checkpoint", ckpt, "--data", a.data, "--json"],
                             check=True, capture_output=True, text=True).stdout
        ours = json.loads(out)
        rel = abs(ours["loss"] - loss64) / loss64
        print(f"eval: loss ours {ours['loss']:.10f} torch64 {loss64:.10f} (relative {rel:.1e}); "
              f"iou ours {ours['iou']:.6f} torch64 {iou:.6f}")
        ok &= rel <= 1e-4 and abs(ours["iou"] - iou) <= 1e-3

        run = os.path.join(tmp, "run")
        subprocess.run([BINARY, "train", "--model", "unet-resnet", "--data", a.data, "--run-dir", run, "--init", ckpt,
                        "--max-steps", "1", "--batch-size", "4", "--test-count", "2", "--quiet"], check=True)
        ours_ckpt = os.path.join(run, "checkpoints", "last.safetensors")
        back = seed_model.UNetResnet(encoder=torchvision.models.resnet18())
        back.load_state_dict({k: v for k, v in load_file(ours_ckpt).items() if not k.startswith("optimizer.")})
        back.eval()
        pred_dir = os.path.join(tmp, "pred")
        subprocess.run([BINARY, "predict", "--checkpoint", ours_ckpt, "--input", paths[0], "--out", pred_dir,
                        "--save-logits"], check=True, stdout=subprocess.DEVNULL)
        with torch.no_grad():
            ref = back(x[:1])[0].numpy()
        logits = np.load(os.path.join(pred_dir, os.path.splitext(os.path.basename(paths[0]))[0] + "_logits.npy"))
        rel = float(np.linalg.norm(logits - ref) / np.linalg.norm(ref))
        print(f"our checkpoint in PyTorch (strict load): |ours - torch| / |torch| = {rel:.1e}")
        ok &= rel <= 1e-4
    print("ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
