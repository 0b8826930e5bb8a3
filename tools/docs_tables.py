#!/usr/bin/env python3
"""Writes the tables of README.md and docs/*.md from the measurements in docs/data/.

    python3 tools/docs_tables.py            # rewrite every table in place
    python3 tools/docs_tables.py --check    # exit 1, with a diff, where a table is not what the data gives
    python3 tools/docs_tables.py --list     # the tables and the files they are in

A table lives between two marker lines, `<!-- table:NAME -->` and `<!-- /table -->`; everything
between them belongs to this script. NAME picks one of the functions in TABLES. The data files are
what tools/measure_performance.sh writes (or figures recorded by hand in the same shape), each with
the CPU it ran on and the command; the scaling model's tables come from tools/scaling/model.py on
docs/scaling-data. Standard library only: CI runs --check from the test suite.
"""
import argparse
import difflib
import glob
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "docs", "data")
MARKER = re.compile(r"^<!-- table:([a-z0-9-]+) -->\n(.*?)^<!-- /table -->$", re.M | re.S)


def load(name):
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def cpu_text(cpu):
    """'AMD EPYC, 2 vCPUs, avx512f/bw/vl/vnni/bf16, no AMX': the model and its bf16/AMX flags."""
    flags = cpu.get("flags", [])
    if cpu.get("flags_complete") and "avx512f" not in flags:
        feats = "/".join(f for f in flags if f in ("avx2", "fma")) or "no AVX2"
        feats += ", no AVX-512"
    elif cpu.get("flags_complete"):
        short = [flags[0]] + [f.replace("avx512_", "").replace("avx512", "") for f in flags[1:]]
        feats = "/".join(short)
        feats += ", AMX" if cpu.get("amx") else ", no AMX"
        if "avx512_bf16" not in flags:
            feats += ", no AVX512_BF16"
    else:
        feats = "AVX-512 (" + "/".join(flags) + "; its bf16 and AMX flags were not recorded)"
    return f"{cpu['model']}, {cpu['vcpus']} vCPUs, {feats}"


def caption(d, commands=None):
    cmds = commands if commands is not None else d.get("commands") or [d["command"]]
    soft = f" Software: {d['software']}." if d.get("software") else ""
    load = f" Load average {d['load_average']:g} when measured." if "load_average" in d else ""
    lines = [f"CPU: {cpu_text(d['cpu'])}.{soft}{load}"]
    lines += ["", *[f"    {c}" for c in cmds]]
    return lines


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def ratio(r):
    return r["ours_images_per_s"] / r["torch_images_per_s"]


def vs_pytorch(name):
    d = load(name)
    rows = []
    for r in d["results"]:
        gf = (f"{r['conv_gflops']:.1f} / {r['sgemm_gflops']:.1f}"
              if "conv_gflops" in r else "-")
        rows.append([r["size"], r["ranks"], r["threads"], f"{r['torch_images_per_s']:.2f}",
                     f"{r['ours_images_per_s']:.2f}", f"**{ratio(r):.2f}x**", f"{r['torch_peak_rss_mb']:.0f} MB",
                     f"{r['ours_peak_rss_mb']:.0f} MB ({100 * r['ours_peak_rss_mb'] / r['torch_peak_rss_mb']:.0f}%)",
                     gf])
    hdr = ["size", "ranks", "threads per rank", "PyTorch img/s", "ours img/s", "ours / PyTorch",
           "PyTorch peak RSS", "ours peak RSS", "conv GFLOP/s (all threads) / one thread's sgemm"]
    return table(hdr, rows) + [""] + caption(d)


def scaling_two_ranks():
    d = load("scaling_two_ranks.json")
    rows = [[f"`{m['command']}`", m["workload"], f"**{m['speedup']:.2f}x**", f"{100 * m['of_reference']:.0f}%"]
            for m in d["measurements"]]
    return (table(["command", "workload", "`-n 2` / `-n 1`", "`-n 2` / two independent runs"], rows)
            + ["", f"CPU: {cpu_text(d['cpu'])}; {d['what']}."]
            + ([f"Load average {d['load_average']:g} when measured."] if "load_average" in d else []))


def spread(xs, fmt):
    return f"{fmt(min(xs))} to {fmt(max(xs))} (median {fmt(statistics.median(xs))})"


def scaling_train_spread():
    d = load("scaling_train_spread.json")
    ms = d["measurements"]
    x = lambda v: f"{v:.2f}x"
    pct = lambda v: f"{100 * v:.0f}%"
    rows = [
        ["`-n 1` images/s", spread([m["n1"] for m in ms], lambda v: f"{v:.2f}")],
        ["`-n 2` images/s", spread([m["n2"] for m in ms], lambda v: f"{v:.2f}")],
        ["two independent `-n 1` at batch 8, images/s", spread([m["pair"] for m in ms], lambda v: f"{v:.2f}")],
        ["`-n 2` / `-n 1`", spread([m["n2"] / m["n1"] for m in ms], x)],
        ["reference / `-n 1`", spread([m["pair"] / m["n1"] for m in ms], x)],
        ["`-n 2` / reference", spread([m["n2"] / m["pair"] for m in ms], pct)],
    ]
    return (table([f"{len(ms)} measurements", "range"], rows) + [""]
            + caption(d) + ["", d["what"][0].upper() + d["what"][1:] + "."])


def machine_standin():
    d = load("machine_standin.json")
    rows = [[p["program"], f"{p['n1']:.2f}", f"{p['n2']:.2f}", f"{p['n2'] / p['n1']:.2f}x", f"{p['pair']:.2f}",
             f"{p['pair'] / p['n1']:.2f}x", f"{100 * p['n2'] / p['pair']:.0f}%",
             f"{p['rounds_at_1_9x']} of {p['rounds']}"] for p in d["programs"]]
    hdr = ["program", "`-n 1`", "`-n 2`", "speed-up", "two independent", "reference / `-n 1`",
           "`-n 2` / reference", "rounds at 1.9x or more"]
    return table(hdr, rows) + [""] + caption(d)


def share(bf16, peak, fp32):
    return f"{bf16:.1f} ({100 * bf16 / peak:.0f}%, {bf16 / fp32:.2f}x)"


def bf16_kernels():
    d = load("precision_kernels.json")
    rows = []
    for l in d["layers"]:
        pk = l["peak"]
        rows.append([f"{l['channels']} -> {l['channels']}, {l['size']} x {l['size']}", f"{pk:.1f}",
                     f"{l['forward_fp32']:.1f}",
                     share(l['forward_bf16'], pk, l['forward_fp32']),
                     f"{l['wgrad_fp32']:.1f}",
                     share(l['wgrad_bf16'], pk, l['wgrad_fp32'])])
    hdr = ["layer", "vdpbf16ps peak", "forward fp32", "forward bf16", "weight grad fp32", "weight grad bf16"]
    return (table(hdr, rows) + ["", "(GFLOP/s; percentages of the measured vdpbf16ps peak.)", ""]
            + caption(d))


def bf16_step(name):
    d = load(name)
    rows, ratios, conv = [], [], []
    for i, p in enumerate(d["pairs"], 1):
        r = p["bf16"] / p["fp32"]
        ratios.append(r)
        conv.append(p["conv_ms_bf16"] / p["conv_ms_fp32"])
        label = f"{i} ({p['note']})" if p.get("note") else str(i)
        rows.append([label, f"{p['fp32']:.2f}", f"{p['bf16']:.2f}", f"{r:.2f}x",
                     f"{p['conv_ms_fp32']} / {p['conv_ms_bf16']}"])
    hdr = ["pair", "fp32 images/s", "bf16 images/s", "ratio", "conv fwd+bwd ms fp32 / bf16"]
    rss = d["peak_rss_mb"]
    return (table(hdr, rows)
            + ["", f"Median ratio **{statistics.median(ratios):.2f}x**; the convolution layers take "
                   f"{min(conv):.2f}-{max(conv):.2f} of float32's time (median {statistics.median(conv):.2f}). "
                   f"Peak RSS {rss['fp32']} MB (fp32), {rss['bf16']} MB (bf16).", ""]
            + caption(d))


def bf16_median(name):
    d = load(name)
    return statistics.median(p["bf16"] / p["fp32"] for p in d["pairs"])


def mixed_best(name, ours="ours bf16"):
    """Ours (in bf16) against PyTorch's fastest configuration, by median step time."""
    rows = load(name)["rows"]
    best = min(r["median_ms"] for r in rows if r["configuration"].startswith("PyTorch"))
    return best / next(r["median_ms"] for r in rows if r["configuration"] == ours)


def mixed_against(name, configuration, ours="ours fp32"):
    """Ours against one PyTorch configuration, by median step time."""
    rows = {r["configuration"]: r for r in load(name)["rows"]}
    return rows[configuration]["median_ms"] / rows[ours]["median_ms"]


def mixed_rss(name):
    """Ours in bf16: peak RSS as a percentage of PyTorch's fastest configuration's."""
    rows = load(name)["rows"]
    best = min((r for r in rows if r["configuration"].startswith("PyTorch")), key=lambda r: r["median_ms"])
    return 100 * next(r["peak_rss_mb"] for r in rows if r["configuration"] == "ours bf16") / best["peak_rss_mb"]


def icbm_test_iou():
    d = load("icbm_test_iou.json")
    a, b = d["mean_over_epochs"]
    rows = [[e] + [f"{v:.4f}" for v in vals] for e, vals in enumerate(d["test_iou"], 1)]
    means = [statistics.fmean(col[a - 1:b]) for col in zip(*d["test_iou"])]
    rows.append([f"mean {a}-{b}"] + [f"**{m:.4f}**" for m in means])
    return table(["epoch"] + d["columns"], rows) + [""] + [f"    {c}" for c in d["commands"]]


def icbm_means():
    d = load("icbm_test_iou.json")
    a, b = d["mean_over_epochs"]
    return [statistics.fmean(col[a - 1:b]) for col in zip(*d["test_iou"])]


def precision_convergence():
    rows = load("precision_convergence.json")["rows"]
    out = [[str(r["seed"]), f"{r['fp32']:.4f}", f"{r['bf16']:.4f}", f"{r['bf16'] - r['fp32']:+.4f}"] for r in rows]
    mean = lambda k: sum(r[k] for r in rows) / len(rows)
    out.append(["mean", f"{mean('fp32'):.4f}", f"{mean('bf16'):.4f}", f"{mean('bf16') - mean('fp32'):+.4f}"])
    return table(["seed", "fp32", "bf16", "bf16 - fp32"], out)


def vs_pytorch_mixed(name):
    d = load(name)
    rows = d["rows"]
    best = min(r["median_ms"] for r in rows if r["configuration"].startswith("PyTorch"))
    best_fast = min(r["fastest_ms"] for r in rows if r["configuration"].startswith("PyTorch"))
    out = [[r["configuration"], f"{r['images_per_s']:.2f}", f"{r['median_ms']:.1f}", f"{best / r['median_ms']:.2f}x",
            f"{r['fastest_ms']:.1f}", f"{best_fast / r['fastest_ms']:.2f}x", f"{r['peak_rss_mb']}"] for r in rows]
    return (table(["configuration", "images/s", "median ms", "vs PyTorch's best", "fastest ms",
                   "vs PyTorch's best", "peak RSS MB"], out)
            + ["", f"CPU: {cpu_text(d['cpu'])}. Software: {d['software']}.", "",
               "    " + d["commands"][0]])


def peak_shares():
    d = load("peak_shares.json")
    confs = d["configurations"]
    kinds = [k for k in ["conv", "conv_transpose", "batch_norm", "pool", "other"]
             if any(k in c["kinds"] for c in confs)]
    unit = lambda k: "GFLOP/s" if k.startswith("conv") else "GB/s"

    def cell(c, k):
        if k not in c["kinds"]:
            return "-"
        v = c["kinds"][k]
        return f"{v['ms']:.1f} ms, {v['rate']:.0f} {unit(k)}, **{100 * v['share']:.0f}%**"
    rows = [["images/s"] + [f"{c['images_per_s']:.2f}" for c in confs],
            ["peak: convolutions (GFLOP/s) / triad (GB/s)"]
            + [f"{c['conv_peak_gflops']:.0f} / {c['triad_gbps']:.1f}" for c in confs]]
    for k in kinds:
        rows.append([f"{k}: ms per step, rate, share of its peak"] + [cell(c, k) for c in confs])
    return table([""] + [f"{c['size']}, {c['precision']}" for c in confs], rows) + [""] + caption(d)


def icbm_fusion():
    d = load("icbm_fusion.json")
    best_wm = max(r["wm_dice"] for r in d["rows"])
    best_gm = max(r["gm_dice"] for r in d["rows"])
    bold = lambda v, best: f"**{v:.4f}**" if v == best else f"{v:.4f}"
    rows = [[r["passes"], bold(r["wm_dice"], best_wm), bold(r["gm_dice"], best_gm),
             f"{100 * r['wm_volume_error']:+.1f}%", f"{100 * r['gm_volume_error']:+.1f}%"] for r in d["rows"]]
    return (table(["axes", "WM Dice", "GM Dice", "WM volume error", "GM volume error"], rows)
            + ["", f"(True volumes: white matter {d['true_mm3']['wm']:,} mm^3, "
                   f"gray matter {d['true_mm3']['gm']:,} mm^3.)"])


def icbm_fusion_seeds():
    d = load("icbm_fusion_seeds.json")
    passes = ["axial", "coronal", "sagittal"]

    def volumes(t, tissue):
        errors = " / ".join(f"{100 * t[p][tissue + '_volume_error']:+.2f}" for p in passes)
        return f"{errors} -> {100 * t['fusion'][tissue + '_volume_error']:+.2f}"

    def dice(t, tissue):
        best = max(t[p][tissue + "_dice"] for p in passes)
        return f"{best:.4f} -> {t['fusion'][tissue + '_dice']:.4f}"

    rows = [[t["seed"], f"{t['best_test_iou']:.4f} ({t['best_epoch']})", volumes(t, "wm"), volumes(t, "gm"),
             dice(t, "wm"), dice(t, "gm")] for t in d["trainings"]]
    return table(["seed", "test IoU (epoch)", "WM volume error %, axial / coronal / sagittal -> fusion",
                  "GM volume error %, the same", "WM Dice, best pass -> fusion", "GM Dice, the same"],
                 rows) + [""] + caption(d)


def headline():
    u = {(r["size"], r["threads"]): r for r in load("vs_pytorch_unet.json")["results"]}
    rn = {r["threads"]: r for r in load("vs_pytorch_resnet.json")["results"]}
    ddp = load("vs_pytorch_ddp.json")["results"][0]
    sc = load("scaling_two_ranks.json")
    p128, p394 = load("precision_step_128.json"), load("precision_step_394.json")
    iou = icbm_means()
    cpus = []

    def cpu(name):
        d = load(name)
        text = cpu_text(d["cpu"])
        if text not in cpus:
            cpus.append(text)
        return f"{d['cpu']['model']} [{cpus.index(text) + 1}]"

    def pair(a, b, key):
        return f"{key(a):.2f}x / {key(b):.2f}x"
    bench = [m for m in sc["measurements"] if m["workload"] == "bench"]
    train = [m for m in sc["measurements"] if m["workload"] == "train"]
    rows = [
        ["UNet training step against PyTorch, 128 x 128, 1 / 2 threads",
         pair(u[128, 1], u[128, 2], ratio)
         + f" ({u[128, 1]['ours_images_per_s']:.1f} / {u[128, 2]['ours_images_per_s']:.1f} img/s)",
         cpu("vs_pytorch_unet.json"), "`tools/measure_performance.sh vs-torch`"],
        ["UNet training step against PyTorch, 394 x 394, 1 / 2 threads; peak RSS", pair(u[394, 1], u[394, 2], ratio)
         + f"; {100 * u[394, 2]['ours_peak_rss_mb'] / u[394, 2]['torch_peak_rss_mb']:.0f}% of PyTorch's",
         cpu("vs_pytorch_unet.json"), "`tools/measure_performance.sh vs-torch`"],
        ["ResNet-18 UNet against PyTorch, 128 x 128, 1 / 2 threads", pair(rn[1], rn[2], ratio),
         cpu("vs_pytorch_resnet.json"), "`tools/measure_performance.sh resnet`"],
        ["2 ranks x 1 thread against PyTorch DDP (gloo), 128 x 128", f"{ratio(ddp):.2f}x",
         cpu("vs_pytorch_ddp.json"), "`tools/measure_performance.sh ddp`"],
        ["`-n 2` against `-n 1`, 1 thread per rank (in brackets: against two independent `-n 1` runs)",
         ", ".join(f"{m['speedup']:.2f}x ({100 * m['of_reference']:.0f}%)" for m in bench) + " bench; "
         + ", ".join(f"{m['speedup']:.2f}x ({100 * m['of_reference']:.0f}%)" for m in train) + " training",
         cpu("scaling_two_ranks.json"), "`tools/measure_performance.sh scaling DATA`"],
        ["`--precision bf16` against fp32, training step, 128 / 394",
         f"{bf16_median('precision_step_128.json'):.2f}x / {bf16_median('precision_step_394.json'):.2f}x",
         cpu("precision_step_128.json"), "`tools/measure_performance.sh bf16`"],
        ["`--precision bf16` against PyTorch's best (bf16 autocast + channels_last), 128 / 394, 2 threads; "
         "peak RSS at 394",
         f"{mixed_best('vs_pytorch_mixed.json'):.2f}x / {mixed_best('vs_pytorch_mixed_394.json'):.2f}x; "
         f"{mixed_rss('vs_pytorch_mixed_394.json'):.0f}% of its",
         cpu("vs_pytorch_mixed_394.json"), "`tools/measure_performance.sh mixed SIZE`"],
        ["On a CPU without AVX-512: fp32 against PyTorch fp32 NCHW / channels_last / its best, 128 x 128, "
         "2 threads",
         f"{mixed_against('vs_pytorch_avx2.json', 'PyTorch fp32 NCHW'):.2f}x / "
         f"{mixed_against('vs_pytorch_avx2.json', 'PyTorch fp32 channels_last'):.2f}x / "
         f"{mixed_best('vs_pytorch_avx2.json', 'ours fp32'):.2f}x",
         cpu("vs_pytorch_avx2.json"), "`tools/measure_performance.sh avx2`"],
        ["test IoU, epochs 26-30 of 30, ICBM slices at 128: ours / PyTorch seeds 0, 1",
         f"{iou[0]:.3f} / {iou[1]:.3f}, {iou[2]:.3f}", "-", "docs/parity.md"],
    ]
    assert cpu("precision_step_394.json") == cpu("precision_step_128.json")
    return (table(["what", "measured", "CPU", "measured by"], rows) + [""]
            + [f"- [{i}] {c}" for i, c in enumerate(cpus, 1)])


def scaling_model():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "scaling", "model.py"),
                          os.path.join(ROOT, "docs", "scaling-data")],
                         check=True, capture_output=True, text=True).stdout
    return [("#" + l) if l.startswith("## ") else l for l in out.rstrip("\n").split("\n")]


TABLES = {
    "headline": headline,
    "vs-pytorch-unet": lambda: vs_pytorch("vs_pytorch_unet.json"),
    "vs-pytorch-resnet": lambda: vs_pytorch("vs_pytorch_resnet.json"),
    "vs-pytorch-ddp": lambda: vs_pytorch("vs_pytorch_ddp.json"),
    "scaling-two-ranks": scaling_two_ranks,
    "scaling-train-spread": scaling_train_spread,
    "machine-standin": machine_standin,
    "bf16-kernels": bf16_kernels,
    "bf16-step-128": lambda: bf16_step("precision_step_128.json"),
    "bf16-step-394": lambda: bf16_step("precision_step_394.json"),
    "icbm-test-iou": icbm_test_iou,
    "icbm-fusion": icbm_fusion,
    "icbm-fusion-seeds": icbm_fusion_seeds,
    "vs-pytorch-mixed": lambda: vs_pytorch_mixed("vs_pytorch_mixed.json"),
    "vs-pytorch-mixed-394": lambda: vs_pytorch_mixed("vs_pytorch_mixed_394.json"),
    "vs-pytorch-avx2": lambda: vs_pytorch_mixed("vs_pytorch_avx2.json"),
    "peak-shares": peak_shares,
    "precision-convergence": precision_convergence,
    "scaling-model": scaling_model,
}


def documents():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 where a table differs")
    ap.add_argument("--list", action="store_true", help="print each table's name and the files it is in")
    a = ap.parse_args()
    made, used, stale, errors = {}, {}, [], []
    for path in documents():
        with open(path) as f:
            text = f.read()
        rel = os.path.relpath(path, ROOT)

        def render(m):
            name = m.group(1)
            used.setdefault(name, []).append(rel)
            if name not in TABLES:
                errors.append(f"{rel}: no table is called {name!r} (tools/docs_tables.py knows {', '.join(TABLES)})")
                return m.group(0)
            if name not in made:
                made[name] = "\n".join(TABLES[name]()) + "\n"
            if m.group(2) != made[name]:
                stale.append((rel, name, m.group(2), made[name]))
            return f"<!-- table:{name} -->\n{made[name]}<!-- /table -->"
        new = MARKER.sub(render, text)
        if new != text and not a.check:
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(new)
            os.replace(tmp, path)
    for name in TABLES:
        if name not in used:
            errors.append(f"table {name!r} is in no document (README.md, docs/*.md)")
    if a.list:
        for name in TABLES:
            print(f"{name}: {', '.join(used.get(name, ['-']))}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if a.check:
        for rel, name, old, new in stale:
            print(f"{rel}: table {name} differs from what docs/data gives:", file=sys.stderr)
            sys.stderr.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       "in the file", "from the data"))
        if stale:
            print("run python3 tools/docs_tables.py to rewrite them", file=sys.stderr)
    elif stale:
        print(f"rewrote {len(stale)} table(s): " + ", ".join(f"{rel}:{name}" for rel, name, _, _ in stale))
    return 1 if errors or (a.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
