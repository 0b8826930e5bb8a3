#!/usr/bin/env python3
"""Writes Tests/Fixtures/losses.safetensors: the value and the gradient with respect to the logits
of each `train --loss`, from a PyTorch reference of its definition, in float64 and float32
(the float32 result sets the tolerance: ours may be no further from float64 than ten times
PyTorch float32's own distance). Needs torch; CI reads the committed file only.

  bce       binary_cross_entropy_with_logits against the one-hot target, mean (the seed's)
  ce        cross_entropy against the class indices, mean over pixels
  dice      MONAI's DiceLoss(softmax=True, batch=True, smooth_nr=smooth_dr=1e-5):
            1 - mean_c (2 sum p t + s) / (sum p + sum t + s), sums over the whole batch
  bce+dice  bce + the same Dice on each class's sigmoid (sigmoid=True)
  ce+dice   ce + the softmax Dice (MONAI's DiceCELoss, both weights 1)

    /opt/torchvenv/bin/python tools/make_loss_fixtures.py
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SMOOTH = 1e-5


def dice(p, t):
    dims = (0, 2, 3)
    inter, pred, truth = (p * t).sum(dims), p.sum(dims), t.sum(dims)
    return 1 - ((2 * inter + SMOOTH) / (pred + truth + SMOOTH)).mean()


def loss(kind, z, labels):
    t = F.one_hot(labels, z.shape[1]).permute(0, 3, 1, 2).to(z.dtype)
    bce = lambda: F.binary_cross_entropy_with_logits(z, t)
    ce = lambda: F.cross_entropy(z, labels)
    return {
        "bce": bce,
        "ce": ce,
        "dice": lambda: dice(torch.softmax(z, 1), t),
        "bce+dice": lambda: bce() + dice(torch.sigmoid(z), t),
        "ce+dice": lambda: ce() + dice(torch.softmax(z, 1), t),
    }[kind]()


def main():
    torch.manual_seed(7)
    # Some confident pixels (large logits) beside uncertain ones; an odd plane.
    z32 = (torch.randn(2, 3, 5, 7) * torch.tensor([0.5, 2.0, 6.0]).view(1, 3, 1, 1)).float()
    labels = torch.randint(0, 3, (2, 5, 7))
    out = {"logits": z32.contiguous(), "labels": labels.to(torch.int64).contiguous()}
    for kind in ["bce", "ce", "dice", "bce+dice", "ce+dice"]:
        for dtype, suffix in [(torch.float64, "64"), (torch.float32, "")]:
            z = z32.to(dtype).clone().requires_grad_(True)
            value = loss(kind, z, labels)
            value.backward()
            out[f"{kind}.loss{suffix}"] = value.detach().reshape(1).contiguous()
            out[f"{kind}.dlogits{suffix}"] = z.grad.detach().contiguous()
    path = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "losses.safetensors")
    save_file(out, path)
    print(f"wrote {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
