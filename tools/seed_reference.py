#!/usr/bin/env python3
"""The seed's own PyTorch training run (its fit()), as a reference curve for unet-dist.

    python tools/seed_reference.py --data DIR [--epochs 30] [--seed 0] [--threads 1] --out CSV

DIR is in the seed's layout: DIR/MRIs/<name>_<ix>.npy (float32 H x W) and
DIR/Segmentations/segm_<ix>.npy (uint8, 0..2). Pairs are sorted by the MRI file name; the last
100 are the test set, the rest the training set (the seed: imgs[:-100], imgs[-100:]).

As the seed: UNet from tools/seed_model.py, Adam lr 3e-4, BCEWithLogitsLoss, training loader
batch 16 shuffled, test loader batch 32 in order, model.train() for the training pass and
model.eval() + no_grad for the test pass; loss and the seed's iou are averaged over batches
(np.mean of the per-batch values: a last partial batch weighs as much as a full one).

Besides the seed's per-batch averages (test_loss, test_iou) it records the per-image means over
all test images (test_loss_img: mean BCE over every element of every test image; test_iou_img:
mean of the seed's per-image, per-class IoU over all test images), which do not depend on how
the test set is batched.

CSV columns: epoch,loss,iou,test_loss,test_iou,test_loss_img,test_iou_img,seconds
(seconds: wall time of the epoch, training and test pass together). One row is written and
flushed per epoch.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed_model import UNet, iou, one_hot  # noqa: E402

SMOOTH = 1e-6


def load_pairs(data):
    names = sorted(os.listdir(os.path.join(data, "MRIs")))
    names = [n for n in names if n.endswith(".npy")]
    imgs, masks = [], []
    for n in names:
        ix = n.split("_")[-1]
        imgs.append(os.path.join(data, "MRIs", n))
        masks.append(os.path.join(data, "Segmentations", f"segm_{ix}"))
    return imgs, masks


class Dataset(torch.utils.data.Dataset):
    """The seed's Dataset, with the arrays read once up front (same values, less disk I/O)."""

    def __init__(self, X, y, n_classes=3):
        self.imgs = [torch.tensor(np.load(p)).unsqueeze(0) for p in X]
        self.masks = [one_hot(np.load(p), n_classes) for p in y]

    def __len__(self):
        return len(self.imgs)

    def __getitem__(self, ix):
        return self.imgs[ix], self.masks[ix]


def per_image_iou(outputs, labels):
    """The seed's iou, but returning the per-image value (mean over the non-background classes)."""
    outputs, labels = torch.sigmoid(outputs) > 0.5, labels > 0.5
    N = outputs.shape[1]
    vals = []
    for i in range(N - 1):
        o, l = outputs[:, i], labels[:, i]
        inter = (o & l).float().sum((1, 2))
        union = (o | l).float().sum((1, 2))
        vals.append((inter + SMOOTH) / (union + SMOOTH))
    return torch.stack(vals, 1).double().mean(1)  # B


def fit(model, dataloader, epochs, out_csv, lr=3e-4):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = torch.nn.BCEWithLogitsLoss()
    elem = torch.nn.BCEWithLogitsLoss(reduction="none")
    with open(out_csv, "w") as f:
        f.write("epoch,loss,iou,test_loss,test_iou,test_loss_img,test_iou_img,seconds\n")
        f.flush()
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            train_loss, train_iou = [], []
            model.train()
            for imgs, masks in dataloader["train"]:
                optimizer.zero_grad()
                y_hat = model(imgs)
                loss = criterion(y_hat, masks)
                loss.backward()
                optimizer.step()
                train_iou.append(iou(y_hat, masks))
                train_loss.append(loss.item())
            test_loss, test_iou = [], []
            img_loss, img_iou = [], []
            model.eval()
            with torch.no_grad():
                for imgs, masks in dataloader["test"]:
                    y_hat = model(imgs)
                    loss = criterion(y_hat, masks)
                    test_loss.append(loss.item())
                    test_iou.append(iou(y_hat, masks))
                    img_loss.append(elem(y_hat, masks).double().mean((1, 2, 3)))
                    img_iou.append(per_image_iou(y_hat, masks))
            secs = time.perf_counter() - t0
            row = (epoch, np.mean(train_loss), np.mean(train_iou), np.mean(test_loss),
                   np.mean(test_iou), torch.cat(img_loss).mean().item(),
                   torch.cat(img_iou).mean().item(), secs)
            f.write("%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.2f\n" % row)
            f.flush()
            print(f"Epoch {epoch}/{epochs} loss {row[1]:.5f} iou {row[2]:.5f} "
                  f"test_loss {row[3]:.5f} test_iou {row[4]:.5f} "
                  f"test_loss_img {row[5]:.5f} test_iou_img {row[6]:.5f} {secs:.1f}s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="CSV file to write")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    imgs, masks = load_pairs(args.data)
    if len(imgs) <= 100:
        raise SystemExit(f"need more than 100 pairs, found {len(imgs)}")
    dataset = {"train": Dataset(imgs[:-100], masks[:-100]),
               "test": Dataset(imgs[-100:], masks[-100:])}
    gen = torch.Generator()
    gen.manual_seed(args.seed)
    dataloader = {
        "train": torch.utils.data.DataLoader(dataset["train"], batch_size=16, shuffle=True,
                                             generator=gen),
        "test": torch.utils.data.DataLoader(dataset["test"], batch_size=32),
    }
    model = UNet()
    nparam = sum(p.numel() for p in model.parameters())
    print(f"data {args.data}: {len(dataset['train'])} train, {len(dataset['test'])} test, "
          f"image {tuple(dataset['train'][0][0].shape)}; UNet {nparam} parameters; "
          f"seed {args.seed}; threads {torch.get_num_threads()}; torch {torch.__version__}",
          flush=True)
    fit(model, dataloader, args.epochs, args.out)


if __name__ == "__main__":
    main()
