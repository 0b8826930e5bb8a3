"""Make Tests/Fixtures/torch_bf16_step.safetensors: how far PyTorch's autocast-bf16 SGD step
lies from its float32 step, per tensor, for the same checkpoint and batch as
torch_sgd_step.safetensors (tools/make_fixtures.py): torch_trained.safetensors in a fresh UNet in
train mode, one SGD step (lr 10, momentum 0, weight_decay 0) on seeddata pairs 0..3 as one batch.

Run from the repository root after tools/make_fixtures.py (needs torch, safetensors, numpy; CI
never runs it):

    /opt/torchvenv/bin/python tools/make_bf16_fixture.py

The bf16 step runs the forward under torch.autocast("cpu", dtype=torch.bfloat16) (the loss is
taken in float32, as autocast does for binary_cross_entropy_with_logits), the backward and the
optimizer step outside it, on float32 master weights: PyTorch's mixed-precision recipe. It is
deterministic (one thread, deterministic algorithms), but the bf16 convolutions are oneDNN's and
their order of sums depends on the CPU's instruction set: the file records the CPU it was made on.

Contents, for every floating key k of the state_dict (parameters, running_mean, running_var):
    dist.<k>     F64 [1]  ||u_bf16 - u_fp32||, u = state after the step minus state before,
                          each the exact difference of float32 states, computed in float64
    norm.<k>     F64 [1]  ||u_fp32||
and loss / loss_bf16 (F32 [1]). The metadata's one key, "made_with", names the torch version
and the CPU (one key: safetensors writes several in no fixed order).
"""
import os
import platform
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_model  # noqa: E402
from make_fixtures import OUT, load_seeddata  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def step(state, x, target, amp):
    """The update (after minus before, float64) of every floating key, and the loss."""
    model = seed_model.UNet()
    model.load_state_dict(state)
    model.train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=10.0, momentum=0, weight_decay=0)
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="mean")
    assert loss.dtype == torch.float32 and logits.dtype == (torch.bfloat16 if amp else torch.float32)
    loss.backward()
    opt.step()
    update = {k: v.double() - before[k].double() for k, v in model.state_dict().items() if v.is_floating_point()}
    return update, loss.detach().reshape(1).clone()


def main():
    state = load_file(os.path.join(OUT, "torch_trained.safetensors"))
    x, target = load_seeddata()
    idx = [0, 1, 2, 3]
    u32, loss32 = step(state, x[idx], target[idx], amp=False)
    u16, loss16 = step(state, x[idx], target[idx], amp=True)
    s = {"loss": loss32, "loss_bf16": loss16}
    print(f"loss fp32 {loss32.item():.6f}, autocast bf16 {loss16.item():.6f}")
    for k in u32:
        d = torch.linalg.vector_norm(u16[k] - u32[k])
        n = torch.linalg.vector_norm(u32[k])
        s["dist." + k] = d.reshape(1).contiguous()
        s["norm." + k] = n.reshape(1).contiguous()
        print(f"{k:40s} |u_bf16 - u_fp32| {d.item():.4e}  |u_fp32| {n.item():.4e}  "
              f"relative {d.item() / n.item() if n.item() else float('inf'):.4f}")
    total = sum(v.item() ** 2 for k, v in s.items() if k.startswith("dist.")) ** 0.5
    norm = sum(v.item() ** 2 for k, v in s.items() if k.startswith("norm.")) ** 0.5
    print(f"all tensors: |u_bf16 - u_fp32| {total:.4e}  |u_fp32| {norm:.4e}  relative {total / norm:.4f}")
    path = os.path.join(OUT, "torch_bf16_step.safetensors")
    save_file(s, path, metadata={"made_with": f"torch {torch.__version__} on {cpu_name()}"})
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
