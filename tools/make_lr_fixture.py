#!/usr/bin/env python3
"""Writes Tests/Fixtures/lr_schedules.json: the learning rate of every step under PyTorch's own
schedulers, for the cases `train --warmup-epochs/--schedule` implements (needs torch; CI reads
the committed file only).

A warm-up of W steps is LambdaLR with lambda t: (t + 1) / W; after it, the schedule runs over the
remaining steps from the peak rate: CosineAnnealingLR(T_max, eta_min=0) or
PolynomialLR(total_iters, power=0.9), each stepped once per optimizer step.

    /opt/torchvenv/bin/python tools/make_lr_fixture.py
"""
import json
import os

import torch

CASES = [
    # peak, warm-up steps, total steps, schedule
    (3e-4, 0, 40, "cosine"),
    (3e-4, 10, 40, "cosine"),
    (1e-3, 0, 37, "poly"),
    (1e-3, 7, 37, "poly"),
    (6e-4, 12, 30, "constant"),
]


def rates(peak, warmup, total, schedule):
    out = []
    param = torch.nn.Parameter(torch.zeros(1))
    if warmup > 0:
        opt = torch.optim.SGD([param], lr=peak)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (t + 1) / warmup)
        for _ in range(warmup):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    opt = torch.optim.SGD([param], lr=peak)
    rest = total - warmup
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=rest, eta_min=0)
    elif schedule == "poly":
        sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=rest, power=0.9)
    else:
        sched = None
    for _ in range(rest):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def main():
    cases = [{"peak": p, "warmup_steps": w, "total_steps": t, "schedule": s, "rates": rates(p, w, t, s)}
             for p, w, t, s in CASES]
    path = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "lr_schedules.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {path} ({len(cases)} cases, torch {torch.__version__})")


if __name__ == "__main__":
    main()
