#!/usr/bin/env python3
"""Markdown table of test IoU per epoch: unet-dist runs (history.csv) beside the seed's PyTorch
runs (tools/seed_reference.py CSVs), with the means over epochs 26-30.

    python3 tools/compare_curves.py --ours A/history.csv [B/history.csv] --torch ref0.csv [ref1.csv]
"""
import argparse
import csv


def column(path, name):
    return {int(r["epoch"]): float(r[name]) for r in csv.DictReader(open(path))}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ours", nargs="+", required=True)
    p.add_argument("--torch", nargs="+", required=True)
    a = p.parse_args()
    # Per-image test IoU on both sides (the seed's own figure averages per batch of 32).
    runs = [(f"unet-dist {i}", column(f, "test_iou")) for i, f in enumerate(a.ours)]
    runs += [(f"PyTorch {i}", column(f, "test_iou_img")) for i, f in enumerate(a.torch)]
    epochs = sorted(set().union(*[r.keys() for _, r in runs]))
    print("| epoch | " + " | ".join(n for n, _ in runs) + " |")
    print("|---:|" + "---:|" * len(runs))
    for e in epochs:
        print(f"| {e} | " + " | ".join(f"{r[e]:.4f}" if e in r else "" for _, r in runs) + " |")
    means = [sum(r.get(e, float("nan")) for e in range(26, 31)) / 5 for _, r in runs]
    print("| mean 26-30 | " + " | ".join(f"**{m:.4f}**" for m in means) + " |")


main()
