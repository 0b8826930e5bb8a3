"""Make the PyTorch reference fixtures that the Swift tests compare against.

Run from the repository root (needs torch, safetensors, numpy; CI never runs it):

    /work/venv/bin/python tools/make_fixtures.py

It is deterministic (fixed seeds, one torch thread): re-running rewrites byte-identical files.

Conventions
-----------
* Every tensor file is safetensors; every tensor is contiguous, NCHW for images.
* Inputs are stored as F32 (class indices too, as F32 holding integers), integer buffers
  (BatchNorm num_batches_tracked) as I64.
* kernels.safetensors (small): every computed output is stored twice: NAME is the torch float32
  result (F32), NAME + "64" is the torch float64 result (F64) of the same computation on the same
  float32 inputs upcast to float64. The Swift tests accept `ours` when
      ||ours - NAME64|| <= 10 * ||NAME - NAME64|| + 1e-6 * ||NAME64||.
  For single names the "64" goes on the end: y / y64, loss / loss64.
* unet_step.safetensors and torch_sgd_step.safetensors (whole-model tensor sets; kept small): the
  torch float32 result itself is NOT stored. Each output NAME64 holds the torch float64 result
  rounded to F32, and "dist." + NAME64 (F64, shape [1]) holds ||torch_f32 - torch_f64||, the L2
  norm over the whole tensor computed in float64 from the unrounded float64 result. The Swift
  tests accept `ours` when
      ||ours - NAME64|| <= 10 * dist.NAME64 + 1e-6 * ||NAME64||.
  (Rounding NAME64 to F32 moves it by about 2^-24 ||NAME64||; the script prints that rounding as
  a fraction of dist: below 1 for every tensor, near 1 only for BN running stats whose dist is
  itself at float32 rounding level, and there the 1e-6 term covers it.) Tensors that are exactly
  0 in exact arithmetic (gradients and updates of conv biases followed by BatchNorm) have
  dist >> ||NAME64||; the bound is then 10 * dist. For prefixed names the "64" goes on the
  prefix: grad64.<p> with dist.grad64.<p>, after64.<k> with dist.after64.<k>, update64.<k> with
  dist.update64.<k>; single names: logits64 / dist.logits64, eval_logits64 /
  dist.eval_logits64. Integer outputs (num_batches_tracked, I64) are identical at both
  precisions and stored once under the "64" name, without a dist. Scalar losses keep both
  values: loss (F32, torch float32) and loss64 (F64, torch float64).
* Scalar losses are stored with shape [1].

Files (all under Tests/Fixtures/)
---------------------------------
kernels.safetensors -- one forward/backward pair per kernel, names "<case>.<tensor>":
    conv3x3   F.conv2d stride 1 pad 1: inputs x[2,3,7,9] w[4,3,3,3] b[4] dy; outputs y dx dw db
    conv3x3_wide  the same with x[1,18,6,33] w[17,18,3,3]: more than 16 input channels and
              outputs, and rows that are not a multiple of 16 wide (the direct kernels' tails)
    conv_s2   F.conv2d stride 2 pad 1: x[2,3,9,8] w[5,3,3,3] b[5] dy; y dx dw db
    conv1x1   F.conv2d stride 1 pad 0: x[2,4,5,6] w[3,4,1,1] b[3] dy; y dx dw db
    conv7s2   F.conv2d stride 2 pad 3, no bias: x[1,2,11,13] w[4,2,7,7] dy; y dx dw
    convt     F.conv_transpose2d kernel 2 stride 2: x[2,4,5,6] w[4,3,2,2] (in,out,kh,kw) b[3] dy;
              y dx dw db
    bn_train  BatchNorm2d(4) training, eps 1e-5, momentum 0.1: x[3,4,5,6] weight bias
              running_mean_in running_var_in dy; y dx dweight dbias running_mean running_var
              (running stats after the update, running_var with the unbiased batch variance)
    bn_eval   BatchNorm2d(4) eval: x weight bias running_mean running_var dy; y dx dweight dbias
    relu      x[2,3,4,5] dy; y dx
    maxpool   MaxPool2d(2), floor: x[2,3,7,9] (distinct values) dy; y dx
    pad_pos   F.pad(x, (1, 0, 1, 0)): x[2,3,4,5] dy; y dx
    pad_neg   F.pad(x, (-1, 0, -1, 0)) (crop top/left): x[2,3,4,5] dy; y dx
    cat       torch.cat([a, b], 1): a[2,3,4,5] b[2,2,4,5] dy; y da dbb (dbb = gradient of b)
    bce       BCEWithLogits mean: logits[2,3,5,6] target (one-hot 0/1); loss[1] dlogits
    ce        F.cross_entropy mean: logits[2,3,5,6] target[2,5,6] (class indices as F32);
              loss[1] dlogits
    adam      Adam(lr 1e-2, betas (0.9, 0.999), eps 1e-8): p0[10] g1 g2 g3 (gradient of steps
              1..3); p1 p2 p3 (parameter after each step) m3 v3 (exp_avg, exp_avg_sq after step 3)
    adamw     AdamW(lr 1e-2, weight_decay 0.1), same layout as adam
    sgd       SGD(lr 0.1, momentum 0.9, weight_decay 0.01): p0 g1 g2 g3; p1 p2 p3 buf3
              (momentum buffer after step 3)
    For the optimizers the "64" outputs come from float64 parameters and gradients.

unet_step.safetensors -- one training step of seed_model.UNet (torch.manual_seed(0), train mode):
    init.<key>    the whole state_dict before the step (num_batches_tracked as I64)
    x [2,1,37,37] (randn), target [2,3,37,37] (one-hot of random classes 0..2)
    The step, once with the float32 model and once with a float64 copy of the init model (on x
    and target upcast), gives (stored as in Conventions: F32 of the float64 result plus dist.):
    logits64 [2,3,37,37], grad64.<param> for every named parameter,
    after64.<key>       BN buffers after the forward (running_mean, running_var; and
                        num_batches_tracked as I64, no dist)
    eval_logits64       the model after that forward, in eval mode (updated running stats), on x
    loss [1] (F32) and loss64 [1] (F64): BCEWithLogits mean.

seeddata/MRIs/slice_000.npy .. slice_009.npy           float32 48x48 in [0, 1] (noisy discs)
seeddata/Segmentations/segm_000.npy .. segm_009.npy    uint8 48x48: 2 background outside the disc,
    1 (gray matter) ring, 0 (white matter) core, ragged noisy boundaries. Paired by the suffix.

torch_trained.safetensors -- state_dict (PyTorch names) of UNet after torch.manual_seed(1),
    60 Adam steps (lr 3e-3, betas (0.9, 0.999), eps 1e-8) in train mode, batch 4, on seeddata
    pairs [0..3], [4..7], [0..3], [4..7], ... (file-name order, alternating); long enough that
    the eval IoU of both classes is well above chance and few logits sit near 0; written by
    safetensors.torch.save_file(model.state_dict()).

torch_trained_eval.json -- that model in eval mode on all 10 seeddata pairs, metrics computed in
    float64 from the float32 model's logits: loss (BCE mean over all elements), iou (seed's metric:
    per image mean over classes 0,1 of (inter+1e-6)/(union+1e-6), then mean over images), iou_wm
    (class 0), iou_gm (class 1), dice (per image and class 0,1 (2 inter+1e-6)/(|pred|+|true|+1e-6),
    mean), images (10); loss64, iou64, iou_wm64, iou_gm64, dice64 from the float64 model;
    min_abs_logit (smallest |logit| of the float32 model over classes 0,1: how close the 0.5
    threshold came to a decision), near_threshold (how many of those logits have |z| < 1e-4:
    pixels whose class 0/1 decision float32 rounding might flip; each flip moves iou/dice by at
    most about 1 / (20 * union) here) and near_threshold_1e3 (the same count for |z| < 1e-3).

torch_sgd_step.safetensors -- torch_trained loaded into a fresh UNet (train mode), one SGD step
    (lr 10, momentum 0, weight_decay 0) on seeddata pairs 0..3 (one batch of 4), once with the
    model in float32 and once in float64 (stored as in Conventions):
    update64.<key>  state_dict after minus before, for every floating key (parameters,
                    running_mean, running_var); the float32 run's update (whose dist is taken) is
                    the exact difference of its float32 states, computed in float64
    after64.<key>   num_batches_tracked after the step (I64, no dist)
    loss [1] (F32) and loss64 [1] (F64).
"""
import copy
import json
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_model  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures")
SEEDDATA = os.path.join(OUT, "seeddata")


# ---------------------------------------------------------------------------------------------
# helpers

def gen(name):
    """A generator seeded from the case name (crc32: stable across runs and Python versions)."""
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def randn(g, *shape, scale=1.0, offset=0.0):
    return (torch.randn(shape, generator=g, dtype=torch.float32) * scale + offset).contiguous()


def t(v, dtype=None):
    v = v.detach().clone().contiguous()
    return v.to(dtype) if dtype is not None else v


def up(inputs):
    return {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}


def case(store, name, inputs, fn):
    """Store inputs as F32 and fn's outputs at float32 (NAME) and float64 (NAME + "64")."""
    for k, v in inputs.items():
        assert v.dtype == torch.float32, (name, k)
        store[f"{name}.{k}"] = t(v)
    out32 = fn({k: t(v) for k, v in inputs.items()})
    out64 = fn(up({k: t(v) for k, v in inputs.items()}))
    for k in out32:
        assert k not in inputs and k + "64" not in inputs, (name, k)
        assert out32[k].dtype == torch.float32 and out64[k].dtype == torch.float64, (name, k)
        store[f"{name}.{k}"] = t(out32[k])
        store[f"{name}.{k}64"] = t(out64[k])


def put64(store, name, v64, v32):
    """Store the float64 torch result as F32 under NAME64 and ||torch_f32 - torch_f64|| (F64 [1],
    computed in float64) under "dist." + NAME64."""
    assert v64.dtype == torch.float64 and v32.dtype == torch.float32, name
    assert name not in store and v64.shape == v32.shape, name
    store[name] = t(v64, torch.float32)
    dist = torch.linalg.vector_norm(v32.double() - v64)
    store["dist." + name] = dist.reshape(1).contiguous()
    cast = torch.linalg.vector_norm(store[name].double() - v64).item()
    CAST_ERR.append((cast / dist.item() if dist.item() else (float("inf") if cast else 0.0), name))


CAST_ERR = []   # (||f32(torch_f64) - torch_f64|| / dist, name): the F32 storage's rounding vs dist


def leaf(v):
    return v.detach().clone().requires_grad_(True)


def grads(y, dy, **leaves):
    y.backward(dy)
    return {k: v.grad for k, v in leaves.items()}


def save(store, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: t(v) for k, v in store.items()}, path)


def onehot_batch(masks):
    """B x H x W integer masks -> B x 3 x H x W float32 via the seed's one_hot, per image."""
    return torch.stack([seed_model.one_hot(np.asarray(m, dtype=np.uint8)) for m in masks]).contiguous()


# ---------------------------------------------------------------------------------------------
# File 1: kernels

def conv_case(store, name, xs, ws, bias, stride, padding):
    g = gen(name)
    x = randn(g, *xs)
    w = randn(g, *ws, scale=0.5)
    inputs = {"x": x, "w": w}
    if bias:
        inputs["b"] = randn(g, ws[0])
    y0 = F.conv2d(x, w, inputs.get("b"), stride=stride, padding=padding)
    inputs["dy"] = randn(g, *y0.shape)

    def fn(i):
        x, w = leaf(i["x"]), leaf(i["w"])
        b = leaf(i["b"]) if "b" in i else None
        y = F.conv2d(x, w, b, stride=stride, padding=padding)
        y.backward(i["dy"])
        out = {"y": y, "dx": x.grad, "dw": w.grad}
        if b is not None:
            out["db"] = b.grad
        return out

    case(store, name, inputs, fn)


def kernels():
    s = {}
    conv_case(s, "conv3x3", (2, 3, 7, 9), (4, 3, 3, 3), True, 1, 1)
    conv_case(s, "conv3x3_wide", (1, 18, 6, 33), (17, 18, 3, 3), True, 1, 1)
    conv_case(s, "conv_s2", (2, 3, 9, 8), (5, 3, 3, 3), True, 2, 1)
    conv_case(s, "conv1x1", (2, 4, 5, 6), (3, 4, 1, 1), True, 1, 0)
    conv_case(s, "conv7s2", (1, 2, 11, 13), (4, 2, 7, 7), False, 2, 3)

    g = gen("convt")
    x, w, b = randn(g, 2, 4, 5, 6), randn(g, 4, 3, 2, 2, scale=0.5), randn(g, 3)
    dy = randn(g, 2, 3, 10, 12)

    def convt(i):
        x, w, b = leaf(i["x"]), leaf(i["w"]), leaf(i["b"])
        y = F.conv_transpose2d(x, w, b, stride=2)
        return {"y": y, **grads(y, i["dy"], dx=x, dw=w, db=b)}

    case(s, "convt", {"x": x, "w": w, "b": b, "dy": dy}, convt)

    g = gen("bn_train")
    inputs = {
        "x": randn(g, 3, 4, 5, 6, scale=2.0, offset=3.0),
        "weight": randn(g, 4, scale=0.2, offset=1.0),
        "bias": randn(g, 4, scale=0.5),
        "running_mean_in": randn(g, 4),
        "running_var_in": torch.rand(4, generator=g) + 0.5,
        "dy": randn(g, 3, 4, 5, 6),
    }

    def bn_train(i):
        x, w, b = leaf(i["x"]), leaf(i["weight"]), leaf(i["bias"])
        rm, rv = t(i["running_mean_in"]), t(i["running_var_in"])
        y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
        return {"y": y, **grads(y, i["dy"], dx=x, dweight=w, dbias=b), "running_mean": rm, "running_var": rv}

    case(s, "bn_train", inputs, bn_train)

    g = gen("bn_eval")
    inputs = {
        "x": randn(g, 3, 4, 5, 6, scale=2.0, offset=3.0),
        "weight": randn(g, 4, scale=0.2, offset=1.0),
        "bias": randn(g, 4, scale=0.5),
        "running_mean": randn(g, 4, scale=1.0, offset=3.0),
        "running_var": torch.rand(4, generator=g) * 4 + 0.5,
        "dy": randn(g, 3, 4, 5, 6),
    }

    def bn_eval(i):
        x, w, b = leaf(i["x"]), leaf(i["weight"]), leaf(i["bias"])
        y = F.batch_norm(x, t(i["running_mean"]), t(i["running_var"]), w, b, training=False,
                         momentum=0.1, eps=1e-5)
        return {"y": y, **grads(y, i["dy"], dx=x, dweight=w, dbias=b)}

    case(s, "bn_eval", inputs, bn_eval)

    g = gen("relu")
    inputs = {"x": randn(g, 2, 3, 4, 5), "dy": randn(g, 2, 3, 4, 5)}

    def relu(i):
        x = leaf(i["x"])
        y = F.relu(x)
        return {"y": y, **grads(y, i["dy"], dx=x)}

    case(s, "relu", inputs, relu)

    g = gen("maxpool")
    n = 2 * 3 * 7 * 9
    x = (torch.randperm(n, generator=g).to(torch.float32) * (4.0 / n) - 2.0).reshape(2, 3, 7, 9).contiguous()
    assert torch.unique(x).numel() == n
    inputs = {"x": x, "dy": randn(g, 2, 3, 3, 4)}

    def maxpool(i):
        x = leaf(i["x"])
        y = F.max_pool2d(x, 2)
        return {"y": y, **grads(y, i["dy"], dx=x)}

    case(s, "maxpool", inputs, maxpool)

    for name, d in (("pad_pos", 1), ("pad_neg", -1)):
        g = gen(name)
        inputs = {"x": randn(g, 2, 3, 4, 5), "dy": randn(g, 2, 3, 4 + d, 5 + d)}

        def pad(i, d=d):
            x = leaf(i["x"])
            y = F.pad(x, (d, 0, d, 0))
            return {"y": y, **grads(y, i["dy"], dx=x)}

        case(s, name, inputs, pad)

    g = gen("cat")
    inputs = {"a": randn(g, 2, 3, 4, 5), "b": randn(g, 2, 2, 4, 5), "dy": randn(g, 2, 5, 4, 5)}

    def cat(i):
        a, b = leaf(i["a"]), leaf(i["b"])
        y = torch.cat([a, b], 1)
        return {"y": y, **grads(y, i["dy"], da=a, dbb=b)}

    case(s, "cat", inputs, cat)

    g = gen("bce")
    logits = randn(g, 2, 3, 5, 6, scale=3.0)
    cls = torch.randint(0, 3, (2, 5, 6), generator=g)
    target = F.one_hot(cls, 3).permute(0, 3, 1, 2).to(torch.float32).contiguous()

    def bce(i):
        z = leaf(i["logits"])
        loss = F.binary_cross_entropy_with_logits(z, i["target"], reduction="mean")
        loss.backward()
        return {"loss": loss.detach().reshape(1), "dlogits": z.grad}

    case(s, "bce", {"logits": logits, "target": target}, bce)

    g = gen("ce")
    logits = randn(g, 2, 3, 5, 6, scale=3.0)
    target = torch.randint(0, 3, (2, 5, 6), generator=g).to(torch.float32)

    def ce(i):
        z = leaf(i["logits"])
        loss = F.cross_entropy(z, i["target"].long(), reduction="mean")
        loss.backward()
        return {"loss": loss.detach().reshape(1), "dlogits": z.grad}

    case(s, "ce", {"logits": logits, "target": target}, ce)

    def opt_case(name, make, state_names):
        g = gen(name)
        inputs = {"p0": randn(g, 10), "g1": randn(g, 10), "g2": randn(g, 10), "g3": randn(g, 10)}

        def fn(i):
            p = leaf(i["p0"])
            opt = make([p])
            out = {}
            for k in (1, 2, 3):
                p.grad = t(i[f"g{k}"])
                opt.step()
                out[f"p{k}"] = t(p)
            st = opt.state[p]
            for out_name, key in state_names:
                out[out_name] = t(st[key])
            return out

        case(s, name, inputs, fn)

    opt_case("adam", lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
             (("m3", "exp_avg"), ("v3", "exp_avg_sq")))
    opt_case("adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
             (("m3", "exp_avg"), ("v3", "exp_avg_sq")))
    opt_case("sgd", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
             (("buf3", "momentum_buffer"),))
    return s


# ---------------------------------------------------------------------------------------------
# File 2: one UNet training step

def bce_mean(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target, reduction="mean")


def whole_step(model, x, target):
    """One training-mode step of `model` at float32 and float64 (a deep copy), from its current
    state: init.<key>, x, target, logits64, loss/loss64, grad64.<param> (parameters the forward
    uses), after64.<buffer>, eval_logits64, each float64 result with its float32 distance."""
    s = {}
    model.train()
    for k, v in model.state_dict().items():
        s[f"init.{k}"] = t(v)
    s["x"], s["target"] = t(x), t(target)
    model64 = copy.deepcopy(model).double()

    def step(m, x, target):
        out = {}
        m.train()
        logits = m(x)
        loss = bce_mean(logits, target)
        loss.backward()
        out["logits64"] = t(logits)
        out["loss"] = t(loss.reshape(1))
        for n, p in m.named_parameters():
            if p.grad is not None:          # UNetResnet's encoder.fc takes no part in the forward
                out[f"grad64.{n}"] = t(p.grad)
        for n, b in m.named_buffers():
            out[f"after64.{n}"] = t(b)
        m.eval()
        with torch.no_grad():
            out["eval_logits64"] = t(m(x))
        return out

    o32 = step(model, x, target)
    o64 = step(model64, x.double(), target.double())
    assert o32.keys() == o64.keys()
    for k in o64:
        if k == "loss":
            s["loss"], s["loss64"] = o32[k], o64[k]
        elif o64[k].is_floating_point():
            put64(s, k, o64[k], o32[k])
        else:
            assert torch.equal(o32[k], o64[k]), k
            s[k] = o64[k]
    return s


def unet_step():
    torch.manual_seed(0)
    model = seed_model.UNet()
    x = torch.randn(2, 1, 37, 37)
    mask = torch.randint(0, 3, (2, 37, 37))
    return whole_step(model, x, onehot_batch(mask.numpy()))


# ---------------------------------------------------------------------------------------------
# File 3: seed-layout data, a PyTorch-trained checkpoint, its evaluation, one SGD step

N_IMAGES, SIZE = 10, 48


def make_seeddata():
    rng = np.random.RandomState(1234)
    os.makedirs(os.path.join(SEEDDATA, "MRIs"), exist_ok=True)
    os.makedirs(os.path.join(SEEDDATA, "Segmentations"), exist_ok=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    for i in range(N_IMAGES):
        cy, cx = SIZE / 2 + rng.uniform(-3, 3), SIZE / 2 + rng.uniform(-3, 3)
        r_out = rng.uniform(15, 20)
        r_in = r_out - rng.uniform(4, 7)
        ang = np.arctan2(yy - cy, xx - cx)
        # smooth angular wobble plus per-pixel jitter: ragged, spatially coherent boundaries
        wob = sum(rng.uniform(0, 1.2) * np.sin(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
        dist = np.hypot(yy - cy, xx - cx) + wob + rng.normal(0, 0.6, (SIZE, SIZE))
        seg = np.full((SIZE, SIZE), 2, dtype=np.uint8)
        seg[dist < r_out] = 1
        seg[dist < r_in] = 0
        level = np.array([0.8, 0.5, 0.05])[seg]
        img = np.clip(level + rng.normal(0, 0.08, (SIZE, SIZE)), 0.0, 1.0).astype(np.float32)
        np.save(os.path.join(SEEDDATA, "MRIs", f"slice_{i:03d}.npy"), img)
        np.save(os.path.join(SEEDDATA, "Segmentations", f"segm_{i:03d}.npy"), seg)


def load_seeddata():
    mris = sorted(os.listdir(os.path.join(SEEDDATA, "MRIs")))
    segs = {f.rsplit("_", 1)[1]: f for f in os.listdir(os.path.join(SEEDDATA, "Segmentations"))}
    xs, ts = [], []
    for f in mris:
        xs.append(torch.from_numpy(np.load(os.path.join(SEEDDATA, "MRIs", f))).unsqueeze(0))
        m = np.load(os.path.join(SEEDDATA, "Segmentations", segs[f.rsplit("_", 1)[1]]))
        ts.append(seed_model.one_hot(m))
    return torch.stack(xs).contiguous(), torch.stack(ts).contiguous()


def metrics(logits, target):
    """The seed's metrics per image on classes 0 and 1, in float64."""
    pred = logits[:, :2] > 0          # sigmoid(z) > 0.5  <=>  z > 0
    lab = target[:, :2] > 0.5
    inter = (pred & lab).double().sum((2, 3))
    union = (pred | lab).double().sum((2, 3))
    iou = (inter + 1e-6) / (union + 1e-6)                                    # B x 2
    dice = (2 * inter + 1e-6) / (pred.double().sum((2, 3)) + lab.double().sum((2, 3)) + 1e-6)
    return {"iou": float(iou.mean(1).mean()), "iou_wm": float(iou[:, 0].mean()),
            "iou_gm": float(iou[:, 1].mean()), "dice": float(dice.mean())}


TRAIN_STEPS, TRAIN_LR = 60, 3e-3


def adam_trained(model, x, target, name):
    """`model` trained with Adam for TRAIN_STEPS steps on two alternating batches of 4; its
    state_dict is saved as NAME.safetensors and returned."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN_LR, betas=(0.9, 0.999), eps=1e-8)
    batches = [range(0, 4), range(4, 8)]
    for k in range(TRAIN_STEPS):
        idx = list(batches[k % 2])
        opt.zero_grad()
        loss = bce_mean(model(x[idx]), target[idx])
        loss.backward()
        opt.step()
    state = {k: t(v) for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, name + ".safetensors"))
    return state


def torch_trained(x, target):
    torch.manual_seed(1)
    return adam_trained(seed_model.UNet(), x, target, "torch_trained")


def eval_metrics(model, x, target, name):
    """`model` in eval mode on every pair at float32 and float64: loss, the seed's metrics and how
    close logits come to the 0.5 threshold, written to NAME.json and returned."""
    model.eval()
    model64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        z32 = model(x)
        z64 = model64(x.double())
    m32 = metrics(z32, target)
    seed_iou = float(seed_model.iou(z32, target))
    assert abs(seed_iou - m32["iou"]) < 1e-6, (seed_iou, m32["iou"])
    m64 = metrics(z64, target)
    res = {"loss": float(bce_mean(z32.double(), target.double())),
           "loss64": float(bce_mean(z64, target.double())),
           **m32, **{k + "64": v for k, v in m64.items()},
           "images": int(x.shape[0]),
           "min_abs_logit": float(z32[:, :2].abs().min()),
           "near_threshold": int((z32[:, :2].abs() < 1e-4).sum()),
           "near_threshold_1e3": int((z32[:, :2].abs() < 1e-3).sum())}
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
        f.write("\n")
    return res


def trained_eval(state, x, target):
    model = seed_model.UNet()
    model.load_state_dict(state)
    return eval_metrics(model, x, target, "torch_trained_eval")


def sgd_step(state, x, target):
    s = {}
    idx = [0, 1, 2, 3]
    out = {}
    for sfx, dtype in (("", torch.float32), ("64", torch.float64)):
        o = out[sfx] = {}
        model = seed_model.UNet()
        model.load_state_dict(state)
        model = model.to(dtype)
        model.train()
        before = {k: t(v) for k, v in model.state_dict().items()}
        opt = torch.optim.SGD(model.parameters(), lr=10.0, momentum=0, weight_decay=0)
        opt.zero_grad()
        loss = bce_mean(model(x[idx].to(dtype)), target[idx].to(dtype))
        loss.backward()
        opt.step()
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                o[f"update64.{k}"] = (v.double() - before[k].double()).to(dtype).contiguous()
            else:
                o[f"after64.{k}"] = t(v)
        s["loss" + sfx] = t(loss.reshape(1))
    assert out[""].keys() == out["64"].keys()
    for k, v64 in out["64"].items():
        if v64.is_floating_point():
            put64(s, k, v64, out[""][k])
        else:
            assert torch.equal(out[""][k], v64), k
            s[k] = v64
    save(s, os.path.join(OUT, "torch_sgd_step.safetensors"))
    return s


# ---------------------------------------------------------------------------------------------
# File 4: the seed's UNetResnet, at a small width (8) so that the files stay small; the layer
# shapes that width 64 adds are the same kernels. Full width is checked against torchvision in
# resnet18_names.json (and end to end by tools/check_resnet_torch.py).

RESNET_WIDTH = 8


def resnet_step():
    torch.manual_seed(0)
    model = seed_model.UNetResnet(width=RESNET_WIDTH)
    # 37: odd sizes at every level (19, 10, 5, 3), so the up blocks crop at the top/left.
    x = torch.randn(2, 1, 37, 37)
    mask = torch.randint(0, 3, (2, 37, 37))
    return whole_step(model, x, onehot_batch(mask.numpy()))


def resnet_trained(x, target):
    """UNetResnet(width 8) trained with Adam on the seeddata, its state_dict and eval metrics."""
    torch.manual_seed(2)
    model = seed_model.UNetResnet(width=RESNET_WIDTH)
    state = adam_trained(model, x, target, "resnet_trained")
    return state, eval_metrics(model, x, target, "resnet_trained_eval")


def resnet_names():
    """The seed's UNetResnet with torchvision's own resnet18: every state_dict name and shape,
    and the check that seed_model.ResNet18(64) is torchvision's resnet18 exactly."""
    import torchvision
    tv = torchvision.models.resnet18()
    ours = seed_model.ResNet18(64)
    assert [(k, v.shape) for k, v in tv.state_dict().items()] == [(k, v.shape) for k, v in ours.state_dict().items()]
    ours.load_state_dict(tv.state_dict())
    tv.eval(), ours.eval()
    xin = torch.randn(1, 3, 37, 37)
    with torch.no_grad():
        a = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.relu(tv.bn1(tv.conv1(xin)))))))
        b = ours.layer4(ours.layer3(ours.layer2(ours.layer1(ours.relu(ours.bn1(ours.conv1(xin)))))))
    assert torch.equal(a, b)
    model = seed_model.UNetResnet(encoder=tv)
    names = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    with open(os.path.join(OUT, "resnet18_names.json"), "w") as f:
        json.dump(names, f)
        f.write("\n")
    # A stand-in for torchvision's ImageNet file at width 8: resnet18's names, 3 input channels.
    torch.manual_seed(3)
    small = seed_model.ResNet18(RESNET_WIDTH)
    save_file({k: t(v) for k, v in small.state_dict().items()}, os.path.join(OUT, "resnet18_w8_imagenet_like.safetensors"))
    return names


def main_resnet():
    r = resnet_step()
    p = os.path.join(OUT, "resnet_step.safetensors")
    save(r, p)
    summarize(p, r)
    x, target = load_seeddata()
    state, res = resnet_trained(x, target)
    summarize(os.path.join(OUT, "resnet_trained.safetensors"), state)
    print("\nTests/Fixtures/resnet_trained_eval.json", json.dumps(res, indent=2, sort_keys=True))
    names = resnet_names()
    print(f"\nTests/Fixtures/resnet18_names.json: {len(names)} tensors")


# ---------------------------------------------------------------------------------------------
# summary

def twin(name):
    """The float64 twin of an output name, or None for inputs."""
    for p in ("grad", "after", "update"):
        if name.startswith(p + "."):
            return p + "64." + name[len(p) + 1:]
    return name + "64"


def summarize(path, store):
    print(f"\n{os.path.relpath(path, ROOT)}  ({os.path.getsize(path)} bytes, {len(store)} tensors)")
    rels = []
    for k in sorted(store):
        v = store[k]
        if k.startswith("dist."):
            continue
        line = f"  {k:48s} {str(v.dtype).replace('torch.', ''):8s} {list(v.shape)}"
        if "dist." + k in store:            # NAME64 stored as F32 plus its dist
            num = store["dist." + k].item()
            den = v.double().norm().item()
            rel = num / den if den else float("inf")
            line += f"   dist/|f64| = {rel:.3e}"
            if rel > 1e-2:
                line += f"   (|f64| = {den:.2e}: exactly 0 in exact arithmetic)"
            rels.append((rel, k))
        elif v.dtype == torch.float32 and twin(k) in store:
            ref = store[twin(k)]
            num = (v.double() - ref).norm().item()
            den = ref.norm().item()
            rel = num / den if den else float("inf")
            line += f"   rel |f32-f64|/|f64| = {rel:.3e}"
            if rel > 1e-2:
                line += f"   (|f64| = {den:.2e}, |f32| = {v.double().norm().item():.2e}: exactly 0 in exact arithmetic)"
        print(line)
    if rels:
        rels.sort()
        r = [x for x, _ in rels]
        print(f"  dist/|f64| over {len(r)} tensors: min {r[0]:.3e} ({rels[0][1]}), "
              f"median {r[len(r) // 2]:.3e}, max {r[-1]:.3e} ({rels[-1][1]}); "
              f"{sum(x > 1e-2 for x in r)} above 1e-2")


def main_kernels():
    os.makedirs(OUT, exist_ok=True)
    k = kernels()
    p = os.path.join(OUT, "kernels.safetensors")
    save(k, p)
    summarize(p, k)


def main():
    main_kernels()
    u = unet_step()
    p = os.path.join(OUT, "unet_step.safetensors")
    save(u, p)
    summarize(p, u)

    make_seeddata()
    x, target = load_seeddata()
    state = torch_trained(x, target)
    summarize(os.path.join(OUT, "torch_trained.safetensors"), state)
    res = trained_eval(state, x, target)
    print("\nTests/Fixtures/torch_trained_eval.json", json.dumps(res, indent=2, sort_keys=True))
    sg = sgd_step(state, x, target)
    summarize(os.path.join(OUT, "torch_sgd_step.safetensors"), sg)

    worst = sorted(CAST_ERR)[-3:][::-1]
    print("\nF32 storage rounding of the NAME64 tensors, ||f32(f64) - f64|| / dist, largest: "
          + ", ".join(f"{r:.3e} ({n})" for r, n in worst))

    total = 0
    for dp, _, fs in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
    print(f"\nTests/Fixtures total: {total} bytes")


if __name__ == "__main__":
    # --only resnet: just the UNetResnet files (File 4); --only kernels: just kernels.safetensors.
    if sys.argv[1:] == ["--only", "resnet"]:
        main_resnet()
    elif sys.argv[1:] == ["--only", "kernels"]:
        main_kernels()
    else:
        main()
        main_resnet()
