#!/usr/bin/env python3
"""A scaling model of unet-dist's data-parallel step, built from measured parts.

    python3 tools/scaling/model.py DIR [--nodes 8,64,256] [--node-speedup X] [--json OUT]

DIR holds what tools/scaling/measure.sh wrote:
  sweep_<profile>_n<N>.csv    allreduce_bench sweeps on the namespace cluster (N ranks over 2 hosts)
  replay_<profile>_<model>.csv  one step's allreduces without its arithmetic (2 ranks, 1 per host)
  replaybn_<profile>_<model>.csv  the same, BatchNorm's reductions alone
  bench2_<profile>_<model>_<size>_r<R>.json  `unet-dist bench --json`, 2 ranks, 1 per host
  bench1_<model>_<size>_b<B>.json  `unet-dist bench --json`, 1 rank, 1 thread, batch B
  counts_<model>.json         a step's allreduce counts (`allreduce_double_counts`, `..._float_counts`)
and, from tools/scaling/overlap.sh (the Overlap sections; left out where absent):
  overlap_<profile>_<model>_128_mb<M>_r<R>.json  `bench --json` on 2 hosts, --bucket-mb M (0: none)
  bench1ov_<model>_<size>.json  `bench --json` on 1 rank with --bucket-mb: each bucket's size and
                              how long before the backward's end it starts (`bucket_lead_ms`)

Parts:
  - a step's compute on one node at per-rank batch b: c0 + c1 * b, through the two bench1 batches
    (one rank, one thread: its CPU time per step, what the step costs a core of its own; the
    wall time of a loaded machine adds the time its scheduler gave to other processes);
  - a step's allreduces: every BatchNorm layer's per-channel sums in Float64 forward (2C+1) and
    backward (2C), then one of all parameters' gradients in Float32 (counted by bench);
  - the link: latency alpha and inverse bandwidth beta, fitted to the 2-rank sweep's minima with
    the algorithm Open MPI 4.1's tuned component picks for each size (coll_tuned_decision_fixed.c);
    the projection adds a real link's one-way delay to alpha (--extra-latency-us: what netem's
    delay would add, which this kernel cannot) and also shows beta at the line's TCP goodput;
  - an allreduce of n bytes on P nodes (one rank per node), by that algorithm:
      recursive doubling      log2(P) * (alpha + n beta)
      ring, segmented ring    2 (P-1) alpha + 2 (P-1)/P n beta
      Rabenseifner            2 log2(P) alpha + 2 (P-1)/P n beta
      reduce + bcast          2 log2(P) * (alpha + n beta)          (binomial trees)
    (the reduction's arithmetic is folded into beta; P a power of two).
A step is compute + all its allreduces, nothing overlapped (unet-dist's --bucket-mb 0). With
buckets (--bucket-mb M) the gradient sum's buckets start during the backward: bucket k starts
lead_k before the backward's end (measured on one rank, as a share of the step's compute, which
scales with it), its sum takes T_k by Rabenseifner's terms above (unet-dist has Open MPI's
non-blocking allreduce reduce-scatter and allgather), and the link carries one bucket at a time:
done_k = max(-lead_k, done_k-1) + T_k; the exposed part is max(0, done_last), at least the last
bucket's T (the first layers' gradients, final only at the end). BatchNorm's reductions stay
exposed. Not modelled: ranks waiting for each other (jitter, imbalance), the switch fabric's
contention, the CPU time the buckets' transfers and sums take from the backward.
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys

RD, RING, SEGRING, RAB, NONOVERLAP = "recursive doubling", "ring", "segmented ring", "Rabenseifner", "reduce+bcast"


def ompi_algorithm(p, nbytes):
    """Open MPI 4.1 coll/tuned's fixed decision for a commutative allreduce of nbytes on p ranks."""
    n = nbytes
    if p < 4:
        if n < 8: return RING
        if n < 4096: return RD
        if n < 8192: return RING
        if n < 16384: return RD
        if n < 65536: return RING
        if n < 262144: return SEGRING
        return RAB
    if p < 8: return RING if n < 16 else RD if n < 8192 else RAB
    if p < 16: return RD if n < 8192 else RAB
    if p < 32: return SEGRING if n < 64 else RD if n < 4096 else RAB
    if p < 64: return SEGRING if n < 128 else RAB
    if p < 128: return RD if n < 262144 else RAB
    if p < 256: return NONOVERLAP if n < 131072 else RD if n < 262144 else RAB
    if p < 512: return NONOVERLAP if n < 4096 else RAB
    return NONOVERLAP if n < 2048 else RD if n < 16384 else RAB


def coefficients(p, nbytes):
    """(latency terms, bandwidth bytes) of one allreduce: time = a * alpha + b * beta."""
    if p <= 1: return 0.0, 0.0
    lg = math.log2(p)
    alg = ompi_algorithm(p, nbytes)
    if alg == RD: return lg, lg * nbytes
    if alg in (RING, SEGRING): return 2 * (p - 1), 2 * (p - 1) / p * nbytes
    if alg == RAB: return 2 * lg, 2 * (p - 1) / p * nbytes
    return 2 * lg, 2 * lg * nbytes


def allreduce_seconds(p, nbytes, alpha, beta):
    a, b = coefficients(p, nbytes)
    return a * alpha + b * beta


def read_csv(path):
    with open(path) as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("[")]
    if not lines: return []
    header = lines[0].split(",")
    rows = []
    for l in lines[1:]:
        parts = l.split(",")
        if len(parts) != len(header): continue
        try: rows.append({h: (v if h == "type" else float(v)) for h, v in zip(header, parts)})
        except ValueError: continue
    return rows


def fit_link(rows, p=2, max_call=5e-3):
    """alpha and beta from the sweep's minima: alpha the median of t / (latency terms) over
    messages up to 1 KiB (their bytes cost under 1% of a call), beta the median of
    (t - latency terms * alpha) / bytes over messages from 64 KiB (past the token bucket's burst,
    which lets a smaller message through at the veth's own speed) whose call took under
    max_call. Longer calls outlast a time slice of the loaded machine: none of their rounds escapes
    pre-emption, and even their minimum is the machine's, not the link's."""
    small, large = [], []
    for r in rows:
        n, t = r["bytes"], r["min_us"] * 1e-6
        a, b = coefficients(p, n)
        if n <= 1024: small.append(t / a)
        elif n >= 65536 and t < max_call: large.append((n, t, a, b))
    alpha = statistics.median(small)
    beta = statistics.median((t - a * alpha) / b for n, t, a, b in large)
    return alpha, beta, len(small), len(large)


def load_json(path):
    with open(path) as f:
        text = f.read().strip().splitlines()
    return json.loads(text[-1])


def step_collectives(p, doubles, floats, alpha, beta, split=False):
    bn = sum(allreduce_seconds(p, 8 * c, alpha, beta) for c in doubles)
    grad = sum(allreduce_seconds(p, 4 * c, alpha, beta) for c in floats)
    return (bn, grad) if split else bn + grad


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def exposed_gradient_seconds(p, counts, leads, alpha, beta):
    """The buckets' sums the backward cannot hide: bucket k (counts[k] floats) starts leads[k]
    seconds before the backward's end, the link sums one bucket at a time, each by reduce-scatter
    + allgather (Rabenseifner's terms: the libnbc algorithm unet-dist selects)."""
    done = -math.inf
    lg = math.log2(p)
    for c, lead in zip(counts, leads):
        done = max(-lead, done) + 2 * lg * alpha + 2 * (p - 1) / p * 4 * c * beta
    return max(0.0, done)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--nodes", default="8,64,256")
    ap.add_argument("--weak-batches", default="2,16", help="per-rank batches for weak scaling")
    ap.add_argument("--strong-batches", default="16,256", help="global batches for strong scaling")
    ap.add_argument("--extra-latency-us", default="10g=5,1g=25",
                    help="one-way delay a real link adds to the veth's latency (what netem's delay would have "
                         "added): a NIC pair and a switch hop; per profile")
    ap.add_argument("--line-gbits", default="10g=9.4,1g=0.94",
                    help="a real link's TCP goodput per profile, for the projection's second table")
    ap.add_argument("--node-speedup", type=float, default=1.0,
                    help="a node computes this many times as fast as one core here (2 threads here: about 1.8-2)")
    ap.add_argument("--overlap-profile", default="1g", help="the profile of overlap.sh's runs")
    ap.add_argument("--json", help="write every number here too")
    args = ap.parse_args()
    d = args.dir
    nodes = [int(x) for x in args.nodes.split(",")]
    weak = [int(x) for x in args.weak_batches.split(",")]
    strong = [int(x) for x in args.strong_batches.split(",")]
    extra = {k: float(v) * 1e-6 for k, v in (kv.split("=") for kv in args.extra_latency_us.split(","))}
    line = {k: float(v) for k, v in (kv.split("=") for kv in args.line_gbits.split(","))}
    out = {"link": {}, "check_replay": [], "check_bench": [], "compute": {}, "projection": [], "projection_line_rate": [],
           "overlap_measured": [], "overlap_projection": []}
    models = ["unet", "unet-resnet"]
    sizes = [128, 394]
    pr = print

    counts = {}
    for m in models:
        j = load_json(os.path.join(d, f"counts_{m}.json"))
        counts[m] = (j["allreduce_double_counts"], j["allreduce_float_counts"])
    pr("## A step's allreduces (from `bench --json`)\n")
    pr("| model | BatchNorm (Float64) | elements | gradients (Float32) |")
    pr("|---|---|---|---|")
    for m in models:
        dc, fc = counts[m]
        pr(f"| {m} | {len(dc)} | {sum(dc)} ({sum(dc) * 8 / 1e3:.1f} KB) | {fc[0]} ({fc[0] * 4 / 1e6:.2f} MB) |")

    # The link.
    profiles = [p for p in ("veth", "10g", "1g") if os.path.exists(os.path.join(d, f"sweep_{p}_n2.csv"))]
    pr("\n## The link: allreduce_bench on 2 ranks, one per namespace host\n")
    pr("| profile | alpha (us) | beta (ns/B) | bandwidth (Gbit/s) | sizes for alpha / beta | 8 B min / median (us) | 256 KiB min / median (us) | 1 MiB min / median (us) | 4 MiB min / median (us) |")
    pr("|---|---|---|---|---|---|---|---|---|")
    link = {}
    for p in profiles:
        rows = read_csv(os.path.join(d, f"sweep_{p}_n2.csv"))
        alpha, beta, kept, total = fit_link(rows)
        link[p] = (alpha, beta)

        def near(nb):
            fl = [r for r in rows if r["type"] == "float"] or rows
            r = min(fl, key=lambda r: abs(math.log(r["bytes"] / nb)))
            return f"{r['min_us']:.0f} / {r['median_us']:.0f}"
        pr(f"| {p} | {alpha * 1e6:.1f} | {beta * 1e9:.3f} | {8 / beta / 1e9:.2f} | {kept} / {total} | {near(8)} | {near(1 << 18)} | {near(1 << 20)} | {near(4 << 20)} |")
        out["link"][p] = {"alpha_s": alpha, "beta_s_per_byte": beta, "alpha_points": kept, "beta_points": total}

    # 4 ranks, 2 per host: what the one-rank-per-node formula says against what was measured.
    pr("\n4 ranks (2 per host; ranks on one host still talk TCP), minima against the formula's "
       "one-rank-per-node prediction with the 2-rank fit:\n")
    pr("| profile | size | algorithm (4 ranks) | predicted (us) | measured min (us) | median (us) |")
    pr("|---|---|---|---|---|---|")
    for p in profiles:
        path = os.path.join(d, f"sweep_{p}_n4.csv")
        if not os.path.exists(path): continue
        rows = [r for r in read_csv(path) if r["type"] == "float"]
        if p not in link or not rows: continue
        alpha, beta = link[p]
        for r in rows[::3]:
            pred = allreduce_seconds(4, r["bytes"], alpha, beta)
            pr(f"| {p} | {int(r['bytes'])} B | {ompi_algorithm(4, r['bytes'])} | {pred * 1e6:.0f} | {r['min_us']:.0f} | {r['median_us']:.0f} |")

    # Check: a step's allreduces replayed without the arithmetic, and inside bench.
    pr("\n## Check: a step's allreduces, predicted against measured (2 hosts, 1 rank each)\n")
    pr("Replayed without the step's arithmetic (`allreduce_bench replay`, 21 rounds): BatchNorm's "
       "reductions alone, and the whole step's (with the gradient sum).\n")
    pr("| profile | model | BatchNorm: predicted / min / median (ms) | whole step: predicted / min / median (ms) | CPU share (BatchNorm, whole) |")
    pr("|---|---|---|---|---|")

    def replay_row(path):
        rr = read_csv(path) if os.path.exists(path) else []
        nan = float("nan")
        return (rr[0]["min_ms"], rr[0]["median_ms"], rr[0].get("cpu_share", nan)) if rr else (nan, nan, nan)
    for p in profiles:
        alpha, beta = link[p]
        for m in models:
            dc, fc = counts[m]
            bn, grad = step_collectives(2, dc, fc, alpha, beta, split=True)
            bmin, bmed, bcpu = replay_row(os.path.join(d, f"replaybn_{p}_{m}.csv"))
            amin, amed, acpu = replay_row(os.path.join(d, f"replay_{p}_{m}.csv"))
            pr(f"| {p} | {m} | {bn * 1e3:.2f} / {bmin:.2f} / {bmed:.2f} | {(bn + grad) * 1e3:.1f} / {amin:.1f} / {amed:.1f} | {bcpu:.2f}, {acpu:.2f} |")
            out["check_replay"].append({"profile": p, "model": m, "bn_predicted_ms": bn * 1e3, "bn_min_ms": bmin,
                                        "bn_median_ms": bmed, "predicted_ms": (bn + grad) * 1e3, "min_ms": amin,
                                        "median_ms": amed, "cpu_share": acpu, "bn_cpu_share": bcpu})
    pr("\nInside `bench` (2 hosts, 1 rank x 1 thread each; collectives per step: each step's "
       "least-waiting rank, median over the timed steps of all runs; the most-waiting rank's after the slash):\n")
    pr("| profile | model | size | predicted (ms) | measured least / most waiting (ms) | step (ms) | runs x steps |")
    pr("|---|---|---|---|---|---|---|")
    for p in ("10g", "1g"):
        if p not in link: continue
        alpha, beta = link[p]
        for m in models:
            dc, fc = counts[m]
            pred = step_collectives(2, dc, fc, alpha, beta)
            for s in sizes:
                files = sorted(glob.glob(os.path.join(d, f"bench2_{p}_{m}_{s}_r*.json")))
                least, most, steps, runs = [], [], [], 0
                for f in files:
                    try: j = load_json(f)
                    except (ValueError, IndexError, OSError): continue
                    runs += 1
                    by_rank = j["collectives_ms_by_rank"]
                    least += [min(col) for col in zip(*by_rank)]
                    most += [max(col) for col in zip(*by_rank)]
                    steps += j["step_ms_all"]
                if not steps: continue
                pr(f"| {p} | {m} | {s} | {pred * 1e3:.1f} | {median(least):.1f} / {median(most):.1f} | {median(steps):.0f} | {runs} x {len(steps) // runs} |")
                out["check_bench"].append({"profile": p, "model": m, "size": s, "predicted_ms": pred * 1e3,
                                           "least_waiting_ms": median(least), "most_waiting_ms": median(most),
                                           "step_ms": median(steps), "runs": runs})

    # Compute per node.
    pr("\n## A step's compute on one core (1 rank, 1 thread: its CPU time per step; the fastest step's wall time in brackets)\n")
    pr("| model | size | batch: CPU ms [fastest wall ms] | c0 (ms) | c1 (ms per image) |")
    pr("|---|---|---|---|---|")
    compute = {}
    for m in models:
        for s in sizes:
            pts, walls = [], {}
            for f in sorted(glob.glob(os.path.join(d, f"bench1_{m}_{s}_b*.json"))):
                try: j = load_json(f)
                except (ValueError, IndexError, OSError): continue
                t = j.get("cpu_ms_per_step", min(j["step_ms_all"])) / 1e3
                pts.append((j["batch_size"], t))
                walls[j["batch_size"]] = min(j["step_ms_all"])
            if len(pts) < 2: continue
            pts.sort()
            (b0, t0), (b1, t1) = pts[0], pts[-1]
            c1 = (t1 - t0) / (b1 - b0)
            c0 = max(t0 - c1 * b0, 0.0)
            compute[(m, s)] = (c0, c1)
            pr(f"| {m} | {s} | {', '.join(f'{b}: {t * 1e3:.0f} [{walls[b]:.0f}]' for b, t in pts)} | {c0 * 1e3:.0f} | {c1 * 1e3:.1f} |")
            out["compute"][f"{m}_{s}"] = {"c0_s": c0, "c1_s_per_image": c1, "points": pts}

    def tc(m, s, b):
        c0, c1 = compute[(m, s)]
        return (c0 + c1 * b if b > 0 else c0) / args.node_speedup

    # Projection.
    def project(p, alpha, beta, m, s, n):
        dc, fc = counts[m]
        bn, grad = step_collectives(n, dc, fc, alpha, beta, split=True)
        comm = bn + grad
        row = {"link": p, "model": m, "size": s, "nodes": n, "bn_ms": bn * 1e3, "grad_ms": grad * 1e3}
        for b in weak:
            t = tc(m, s, b) + comm
            row[f"weak_b{b}"] = {"step_ms": t * 1e3, "comm_share": comm / t, "efficiency": tc(m, s, b) / t,
                                 "speedup_for_90pct": tc(m, s, b) / (9 * comm)}
        for g in strong:
            t = tc(m, s, math.ceil(g / n)) + comm
            row[f"strong_B{g}"] = {"step_ms": t * 1e3, "comm_share": comm / t, "efficiency": tc(m, s, g) / (n * t)}
        return row

    def cell(c):
        return f"{c['step_ms']:.0f}, {100 * c['comm_share']:.1f}, {100 * c['efficiency']:.0f}"

    pr(f"\n## Projection (one rank per node, a node computing {args.node_speedup:g}x as fast as one core here; the fitted alpha plus the profile's "
       f"extra delay {', '.join(f'{k} {v * 1e6:.0f} us' for k, v in extra.items())}; the fitted beta)\n")
    hdr_w = " | ".join(f"weak b={b}: step ms, comm %, eff %" for b in weak)
    hdr_s = " | ".join(f"strong B={g}: step ms, comm %, eff %" for g in strong)
    pr(f"| link | model | size | nodes | comm ms (BN + grad) | {hdr_w} | {hdr_s} |")
    pr("|---|---|---|---|---|" + "---|" * (len(weak) + len(strong)))
    for p in ("10g", "1g"):
        if p not in link: continue
        alpha, beta = link[p]
        for m in models:
            for s in sizes:
                if (m, s) not in compute: continue
                for n in nodes:
                    r = project(p, alpha + extra.get(p, 0.0), beta, m, s, n)
                    cells = [cell(r[f"weak_b{b}"]) for b in weak] + [cell(r[f"strong_B{g}"]) for g in strong]
                    pr(f"| {p} | {m} | {s} | {n} | {r['bn_ms'] + r['grad_ms']:.1f} ({r['bn_ms']:.1f} + {r['grad_ms']:.1f}) | "
                       + " | ".join(cells) + " |")
                    out["projection"].append(r)

    # The same with a real link's TCP bandwidth instead of what the namespace link gave.
    pr(f"\nWith the line's TCP goodput for beta ({', '.join(f'{k} {v:g} Gbit/s' for k, v in line.items())}) "
       "instead of the fitted one, weak scaling:\n")
    pr("| link | model | size | " + " | ".join(f"{n} nodes b={b}: comm %, eff %" for n in nodes for b in weak) + " |")
    pr("|---|---|---|" + "---|" * (len(nodes) * len(weak)))
    for p in ("10g", "1g"):
        if p not in link or p not in line: continue
        alpha = link[p][0] + extra.get(p, 0.0)
        for m in models:
            for s in sizes:
                if (m, s) not in compute: continue
                cells = []
                for n in nodes:
                    r = project(p, alpha, 8 / (line[p] * 1e9), m, s, n)
                    r["beta"] = "line rate"
                    out["projection_line_rate"].append(r)
                    cells += [f"{100 * r[f'weak_b{b}']['comm_share']:.1f}, {100 * r[f'weak_b{b}']['efficiency']:.0f}" for b in weak]
                pr(f"| {p} | {m} | {s} | " + " | ".join(cells) + " |")

    # Overlap: measured on the namespace cluster, then projected.
    ov = overlap_sections(d, args, out, link, extra, compute, counts, models, sizes, nodes, weak, strong, tc)

    # At 64 nodes: efficiency, whether communication passes 5% of a step, and which collective leads.
    pr("\n## At 64 nodes (fitted link)\n")
    for r in out["projection"]:
        if r["nodes"] != 64: continue
        w = r[f"weak_b{weak[0]}"]
        dom = "gradient allreduce" if r["grad_ms"] > r["bn_ms"] else "BatchNorm reductions"
        flag = "comm > 5%" if w["comm_share"] > 0.05 else "comm <= 5%"
        pr(f"- {r['link']} {r['model']} {r['size']}, weak b={weak[0]}: efficiency {100 * w['efficiency']:.1f}%, "
           f"{flag} ({100 * w['comm_share']:.1f}%), dominated by the {dom} ({r['grad_ms']:.1f} against {r['bn_ms']:.1f} ms); "
           f"a node {w['speedup_for_90pct'] * args.node_speedup:.2g}x as fast as one core here would be at 90%")
    if ov:
        pr(f"\n## At 64 nodes with overlap (fitted link, --bucket-mb {ov})\n")
        for r in out["overlap_projection"]:
            if r["nodes"] != 64: continue
            w0, w1 = r[f"weak_b{weak[0]}"], r[f"weak_b{weak[0]}_overlap"]
            pr(f"- {r['link']} {r['model']} {r['size']}, weak b={weak[0]}: comm {100 * w0['comm_share']:.1f}% -> "
               f"{100 * w1['comm_share']:.1f}%, efficiency {100 * w0['efficiency']:.1f}% -> {100 * w1['efficiency']:.1f}% "
               f"(gradient {r['grad_ms']:.1f} ms, exposed {w1['exposed_grad_ms']:.1f} ms; BatchNorm {r['bn_ms']:.1f} ms)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def overlap_sections(d, args, out, link, extra, compute, counts, models, sizes, nodes, weak, strong, tc):
    """The Overlap sections: overlap.sh's runs with and without buckets, and the projection with
    the buckets' measured leads. Returns the bucket size (MiB) used, or None without data."""
    pr = print
    prof = args.overlap_profile
    runs = {}
    for f in sorted(glob.glob(os.path.join(d, f"overlap_{prof}_*_128_mb*_r*.json"))):
        name = os.path.basename(f)[len(f"overlap_{prof}_"):-len(".json")]
        m, rest = name.split("_128_mb")
        mb = float(rest.rsplit("_r", 1)[0])
        try: j = load_json(f)
        except (ValueError, IndexError, OSError): continue
        runs.setdefault((m, mb), []).append(j)
    if runs:
        pr(f"\n## Overlap, measured: `bench` on 2 hosts ({prof}), 1 rank x 1 thread each, 128, batch 8\n")
        pr("Per step: its wall time and the time in collectives (each step's least-waiting rank: "
           "BatchNorm's reductions, the gradient sum, and the waiting for the other rank in them); "
           "medians over the timed steps of all runs, alternated with and without buckets.\n")
        pr("| model | --bucket-mb | runs x steps | step (ms) | collectives (ms) | comm share (%) | CPU per step (ms) |")
        pr("|---|---|---|---|---|---|---|")
        for (m, mb) in sorted(runs):
            js = runs[(m, mb)]
            steps = [t for j in js for t in j["step_ms_all"]]
            least = [min(col) for j in js for col in zip(*j["collectives_ms_by_rank"])]
            shares = [min(col) / t for j in js for col, t in zip(zip(*j["collectives_ms_by_rank"]), j["step_ms_all"])]
            cpu = median([j["cpu_ms_per_step"] for j in js])
            pr(f"| {m} | {mb:g} | {len(js)} x {len(steps) // len(js)} | {median(steps):.0f} | {median(least):.0f} | "
               f"{100 * median(shares):.1f} | {cpu:.0f} |")
            out["overlap_measured"].append({"model": m, "bucket_mb": mb, "runs": len(js), "step_ms": median(steps),
                                            "collectives_ms": median(least), "comm_share": median(shares),
                                            "cpu_ms_per_step": cpu})
    leads = {}
    for m in models:
        for s in sizes:
            path = os.path.join(d, f"bench1ov_{m}_{s}.json")
            if not os.path.exists(path): continue
            j = load_json(path)
            step = median(j["step_ms_all"])
            leads[(m, s)] = (j["bucket_mb"], j["bucket_counts"], [x / step for x in j["bucket_lead_ms"]])
    if not leads: return None
    saved = {}
    for r in out["overlap_measured"]:
        saved.setdefault(r["model"], {})[r["bucket_mb"]] = r["collectives_ms"]
    if prof in link and saved:
        alpha, beta = link[prof]
        pr(f"\nCheck: what the buckets hide on these 2 hosts ({prof}, the fitted link, 4 images per rank), "
           "predicted against the measured drop in collectives:\n")
        pr("| model | gradient sum (ms) | predicted exposed (ms) | predicted saving (ms) | measured saving (ms) |")
        pr("|---|---|---|---|---|")
        for m in models:
            if (m, 128) not in leads or (m, 128) not in compute or len(saved.get(m, {})) < 2: continue
            mb, cs, fr = leads[(m, 128)]
            c0, c1 = compute[(m, 128)]
            t = c0 + 4 * c1
            grad = step_collectives(2, [], counts[m][1], alpha, beta)
            hidden = exposed_gradient_seconds(2, cs, [f * t for f in fr], alpha, beta)
            ms = sorted(saved[m])
            drop = saved[m][ms[0]] - saved[m][ms[-1]]
            pr(f"| {m} | {grad * 1e3:.0f} | {hidden * 1e3:.0f} | {(grad - hidden) * 1e3:.0f} | {drop:.0f} |")
            out.setdefault("overlap_check", []).append({"model": m, "grad_ms": grad * 1e3, "exposed_ms": hidden * 1e3,
                                                        "measured_saving_ms": drop})
    mbs = sorted({v[0] for v in leads.values()})
    pr("\n## Overlap, projected (the projection above; each bucket's lead as a share of the step's compute, "
       "from one rank)\n")
    pr("| model | size | --bucket-mb | buckets | leads of the first / middle / last bucket (% of a step) |")
    pr("|---|---|---|---|---|")
    for (m, s), (mb, cs, fr) in sorted(leads.items()):
        pr(f"| {m} | {s} | {mb:g} | {len(cs)} | {100 * fr[0]:.1f} / {100 * fr[len(fr) // 2]:.1f} / {100 * fr[-1]:.1f} |")
    pr("")
    hdr = " | ".join(f"weak b={b}: comm %, eff % without -> with" for b in weak)
    hdr += " | " + " | ".join(f"strong B={g}: eff % without -> with" for g in strong)
    pr(f"| link | model | size | nodes | grad ms: all / exposed | {hdr} |")
    pr("|---|---|---|---|---|" + "---|" * (len(weak) + len(strong)))
    for p in ("10g", "1g"):
        if p not in link: continue
        alpha, beta = link[p][0] + extra.get(p, 0.0), link[p][1]
        for m in models:
            for s in sizes:
                if (m, s) not in compute or (m, s) not in leads: continue
                mb, cs, fr = leads[(m, s)]
                dc, fc = counts[m]
                for n in nodes:
                    bn, grad = step_collectives(n, dc, fc, alpha, beta, split=True)
                    row = {"link": p, "model": m, "size": s, "nodes": n, "bucket_mb": mb, "bn_ms": bn * 1e3,
                           "grad_ms": grad * 1e3}
                    cells = []
                    for b in weak:
                        t = tc(m, s, b)
                        hidden = exposed_gradient_seconds(n, cs, [f * t for f in fr], alpha, beta)
                        c0, c1 = bn + grad, bn + hidden
                        row[f"weak_b{b}"] = {"comm_share": c0 / (t + c0), "efficiency": t / (t + c0)}
                        row[f"weak_b{b}_overlap"] = {"comm_share": c1 / (t + c1), "efficiency": t / (t + c1),
                                                     "exposed_grad_ms": hidden * 1e3}
                        cells.append(f"{100 * c0 / (t + c0):.1f}, {100 * t / (t + c0):.0f} -> "
                                     f"{100 * c1 / (t + c1):.1f}, {100 * t / (t + c1):.0f}")
                    for g in strong:
                        t = tc(m, s, math.ceil(g / n))
                        hidden = exposed_gradient_seconds(n, cs, [f * t for f in fr], alpha, beta)
                        e0, e1 = tc(m, s, g) / (n * (t + bn + grad)), tc(m, s, g) / (n * (t + bn + hidden))
                        row[f"strong_B{g}"] = {"efficiency": e0}
                        row[f"strong_B{g}_overlap"] = {"efficiency": e1, "exposed_grad_ms": hidden * 1e3}
                        cells.append(f"{100 * e0:.0f} -> {100 * e1:.0f}")
                    ex = row[f"weak_b{weak[0]}_overlap"]["exposed_grad_ms"]
                    pr(f"| {p} | {m} | {s} | {n} | {grad * 1e3:.1f} / {ex:.1f} | " + " | ".join(cells) + " |")
                    out["overlap_projection"].append(row)
    pr(f"\n(grad ms exposed: at weak b={weak[0]}.)")
    return ", ".join(f"{x:g}" for x in mbs)


if __name__ == "__main__":
    sys.exit(main())
