#!/usr/bin/env python3
"""Writes torchvision's ImageNet resnet18 weights as the safetensors file that
`unet-dist train --model unet-resnet --pretrained FILE` reads (torchvision's own state_dict names:
conv1.weight, bn1.*, layer1.0.conv1.weight, ..., fc.bias). Run it where the weights are; unet-dist
itself never downloads anything.

    python tools/convert_resnet18.py resnet18_imagenet.safetensors                 # torchvision's cache (or download)
    python tools/convert_resnet18.py resnet18_imagenet.safetensors --pth resnet18-f37072fd.pth

Needs torch, torchvision and safetensors. Checks every name and shape against torchvision's resnet18.
"""
import argparse
import sys

import torch
import torchvision
from safetensors.torch import save_file


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the safetensors file to write")
    p.add_argument("--pth", help="torchvision's resnet18 weights file (default: IMAGENET1K_V1 through torchvision)")
    a = p.parse_args()
    if a.pth:
        state = torch.load(a.pth, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    else:
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        state = torchvision.models.resnet18(weights=weights).state_dict()
    expected = torchvision.models.resnet18().state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        sys.exit(f"{a.pth or 'torchvision weights'}: not torchvision's resnet18: "
                 f"missing {missing[:3]}, wrong shapes {wrong[:3]}")
    save_file({k: state[k].detach().contiguous() for k in expected}, a.out)
    print(f"wrote {a.out}: {len(expected)} tensors")


if __name__ == "__main__":
    main()
