#!/usr/bin/env python3
"""The seed's PyTorch training step against `unet-dist bench`, alternately, same settings.

For each configuration (size, batch, threads) and each round, runs a PyTorch worker process
(the seed's UNet, or with --model unet-resnet its UNetResnet with torchvision's resnet18; Adam lr 3e-4, BCEWithLogitsLoss, torch.set_num_threads(T)) and then
`unet-dist bench --json`, each with 1 warm-up step and --steps timed steps on synthetic data.
Step times of all rounds are pooled; the medians give images/s and the ratio ours / PyTorch.
Peak RSS is each process's ru_maxrss (PyTorch's includes the interpreter and torch itself).

    tools/bench_vs_torch.py --preset all            # 128 and 394, batch 16, 1 and 2 threads
    tools/bench_vs_torch.py --size 128 --threads 2 --steps 5 --rounds 2
    tools/bench_vs_torch.py --preset 128 --json results.json
    tools/bench_vs_torch.py --model unet-resnet --size 128 --threads 2 --rounds 3
    tools/bench_vs_torch.py --ddp --size 128 --rounds 3   # mpirun -n 2 vs DDP (gloo), 1 thread each
    tools/bench_vs_torch.py --amp bf16 --channels-last --precision bf16 --threads 2
    tools/bench_vs_torch.py --mixed --size 128 --threads 2 --rounds 3

PyTorch's side runs in float32 NCHW by default; --amp bf16 runs its forward and loss under
torch.autocast("cpu", dtype=torch.bfloat16) (bf16 convolutions, float32 master weights), and
--channels-last converts the model and the batch to torch.channels_last. --precision sets ours.
--mixed runs, per round and configuration, all four PyTorch variants (float32 and bf16 autocast,
NCHW and channels_last) and ours in fp32 and bf16 (--ours), one after another, and prints one table of
their medians with the CPU's model, its bf16 flags (avx512_bf16, amx_bf16) and the load average.

Needs torch (e.g. /work/venv/bin/python tools/bench_vs_torch.py) and a release build.
The machine's other load makes wall-clock medians noisy: run it when the machine is quiet.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def torch_worker(model_name, size, batch, threads, steps, amp=False, channels_last=False):
    import torch
    sys.path.insert(0, HERE)
    import seed_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model_name == "unet-resnet":
        import torchvision
        model = seed_model.UNetResnet(encoder=torchvision.models.resnet18())
    else:
        model = seed_model.UNet()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    crit = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 1, size, size)
    labels = torch.randint(0, 3, (batch, size, size))
    y = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float().contiguous()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x, y = x.to(memory_format=torch.channels_last), y.to(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = crit(model(x), y)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i > 0:
            times.append(dt)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step_s": times, "peak_rss_mb": rss, "torch": torch.__version__}))


def ddp_worker(model_name, size, batch, steps, rank, world, port):
    """One rank of PyTorch DDP on CPU (gloo), one thread, its share of each global batch."""
    import torch
    import torch.distributed as dist
    sys.path.insert(0, HERE)
    import seed_model

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    if model_name == "unet-resnet":
        import torchvision
        model = seed_model.UNetResnet(encoder=torchvision.models.resnet18())
    else:
        model = seed_model.UNet()
    model = torch.nn.parallel.DistributedDataParallel(model)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    crit = torch.nn.BCEWithLogitsLoss()
    local = batch // world + (1 if rank < batch % world else 0)
    x = torch.randn(local, 1, size, size)
    labels = torch.randint(0, 3, (local, size, size))
    y = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float().contiguous()
    times = []
    for i in range(steps + 1):
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
        dist.barrier()
        if i > 0:
            times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if rank == 0:
        print(json.dumps({"step_s": times, "peak_rss_mb": rss, "torch": torch.__version__}))
    dist.destroy_process_group()


def run_ddp(model, size, batch, steps, world=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    port = 29500 + os.getpid() % 1000
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--ddp-worker", "--rank", str(r),
                               "--world", str(world), "--port", str(port), "--model", model, "--size", str(size),
                               "--batch-size", str(batch), "--steps", str(steps)],
                              env=env, stdout=subprocess.PIPE, text=True) for r in range(world)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a DDP worker failed")
    return json.loads(outs[0].strip().splitlines()[-1])


def run_torch(model, size, batch, threads, steps, amp=False, channels_last=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", "--model", model, "--size", str(size),
           "--batch-size", str(batch), "--threads", str(threads), "--steps", str(steps)]
    cmd += (["--amp", "bf16"] if amp else []) + (["--channels-last"] if channels_last else [])
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_ours(binary, model, size, batch, threads, steps, ranks, precision="fp32"):
    cmd = [binary, "bench", "--json", "--model", model, "--size", str(size), "--batch-size", str(batch), "--threads", str(threads),
           "--steps", str(steps), "--precision", precision]
    if ranks > 1:
        mpi = ["mpirun", "-n", str(ranks), "--bind-to", "none"]
        if os.geteuid() == 0:
            mpi.append("--allow-run-as-root")
        if ranks * threads > os.cpu_count():
            mpi.append("--oversubscribe")
        cmd = mpi + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_description():
    """The CPU's model name and which of its bf16 flags /proc/cpuinfo lists."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return model, bf16


# (label, PyTorch autocast bf16, channels_last) and ours (label, precision).
TORCH_VARIANTS = [("torch fp32 NCHW", False, False), ("torch fp32 channels_last", False, True),
                  ("torch bf16 autocast NCHW", True, False), ("torch bf16 autocast channels_last", True, True)]
OUR_VARIANTS = [("ours fp32", "fp32"), ("ours bf16", "bf16")]


def mixed(a):
    model, bf16 = cpu_description()
    print(f"CPU: {model}; bf16 flags: {', '.join(bf16) or 'none'}; {os.cpu_count()} CPUs")
    sizes = {"128": [128], "394": [394], "all": [128, 394]}.get(a.preset, [a.size])
    results = []
    for size in sizes:
        for threads in a.threads:
            ours = [v for v in OUR_VARIANTS if v[1] in a.ours.split(",")]
            steps = {label: [] for label, *_ in TORCH_VARIANTS + ours}
            rss = {label: 0.0 for label in steps}
            loads = []
            for _ in range(a.rounds):
                loads.append(os.getloadavg()[0])
                for label, amp, cl in TORCH_VARIANTS:
                    t = run_torch(a.model, size, a.batch_size, threads, a.steps, amp, cl)
                    steps[label] += t["step_s"]
                    rss[label] = max(rss[label], t["peak_rss_mb"])
                for label, precision in ours:
                    o = run_ours(a.binary, a.model, size, a.batch_size, threads, a.steps, 1, precision)
                    steps[label] += [ms / 1000 for ms in o["step_ms_all"]]
                    rss[label] = max(rss[label], o["peak_rss_mb"])
                # Each round's medians as it ends: a long run shows its progress.
                print(f"round {len(loads)} (size {size}, {threads} threads, load {loads[-1]:.1f}): " + ", ".join(
                    f"{label} {a.batch_size / statistics.median(v[-a.steps:]):.2f}" for label, v in steps.items())
                    + " images/s", flush=True)
            base = statistics.median(steps[TORCH_VARIANTS[0][0]])
            print(f"\nsize {size}, batch {a.batch_size}, {threads} threads, {a.rounds} rounds x {a.steps} steps; "
                  f"1-minute load average at each round's start: {', '.join(f'{x:.1f}' for x in loads)}")
            # The fastest step beside the median: on a shared machine the least disturbed one.
            fastest = min(steps[TORCH_VARIANTS[0][0]])
            print(f"{'configuration':<34} {'images/s':>9} {'median ms':>10} {'vs torch fp32':>13} "
                  f"{'fastest ms':>10} {'vs torch fp32':>13} {'peak RSS MB':>11}")
            for label in steps:
                m, f = statistics.median(steps[label]), min(steps[label])
                print(f"{label:<34} {a.batch_size / m:>9.2f} {1000 * m:>10.1f} {base / m:>12.2f}x "
                      f"{1000 * f:>10.1f} {fastest / f:>12.2f}x {rss[label]:>11.0f}")
                results.append({"model": a.model, "size": size, "batch": a.batch_size, "threads": threads,
                                "configuration": label, "images_per_s": a.batch_size / m, "step_s": steps[label],
                                "peak_rss_mb": rss[label], "cpu": model, "cpu_bf16_flags": bf16,
                                "load_average": loads})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=29500, help=argparse.SUPPRESS)
    p.add_argument("--ddp", action="store_true",
                   help="mpirun -n 2 unet-dist bench --threads 1 against PyTorch DDP (gloo), 2 processes, 1 thread each")
    p.add_argument("--model", choices=["unet", "unet-resnet"], default="unet")
    p.add_argument("--preset", choices=["128", "394", "all"], help="128 and/or 394, batch 16, 1 and 2 threads")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=5, help="timed steps per process (after 1 warm-up)")
    p.add_argument("--rounds", type=int, default=1, help="alternations of PyTorch and ours per configuration")
    p.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "unet-dist"))
    p.add_argument("--json", metavar="FILE", help="also write every result to FILE")
    p.add_argument("--amp", choices=["none", "bf16"], default="none",
                   help="PyTorch's forward under torch.autocast(\"cpu\", dtype=torch.bfloat16)")
    p.add_argument("--channels-last", action="store_true", help="PyTorch's model and batch in torch.channels_last")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="ours: unet-dist bench --precision")
    p.add_argument("--mixed", action="store_true",
                   help="all four PyTorch variants and ours in fp32 and bf16, alternated, one table")
    p.add_argument("--ours", default="fp32,bf16",
                   help="with --mixed: our precisions, comma-separated (fp32 alone where the CPU has no AVX512_BF16 "
                        "and our bf16 runs its portable kernels)")
    a = p.parse_args()
    if a.torch_worker:
        torch_worker(a.model, a.size, a.batch_size, a.threads[0], a.steps, a.amp == "bf16", a.channels_last)
        return
    if a.mixed:
        mixed(a)
        return
    if a.ddp_worker:
        ddp_worker(a.model, a.size, a.batch_size, a.steps, a.rank, a.world, a.port)
        return
    sizes = {"128": [128], "394": [394], "all": [128, 394]}.get(a.preset, [a.size])
    configs = [(s, a.batch_size, t) for s in sizes for t in ([1] if a.ddp else a.threads)]
    results = []
    print(f"{'size':>5} {'batch':>5} {'thr':>3} | {'torch img/s':>11} {'ours img/s':>10} {'ratio':>6} | "
          f"{'torch RSS MB':>12} {'ours RSS MB':>11} {'RSS ratio':>9} | conv/sgemm GFLOP/s", flush=True)
    for size, batch, threads in configs:
        torch_steps, our_steps, torch_rss, our_rss, conv, sgemm = [], [], 0.0, 0.0, [], []
        for _ in range(a.rounds):
            t = run_ddp(a.model, size, batch, a.steps) if a.ddp else run_torch(a.model, size, batch, threads, a.steps,
                                                                                a.amp == "bf16", a.channels_last)
            torch_steps += t["step_s"]
            torch_rss = max(torch_rss, t["peak_rss_mb"])
            o = run_ours(a.binary, a.model, size, batch, threads, a.steps, 2 if a.ddp else 1, a.precision)
            our_steps += [ms / 1000 for ms in o["step_ms_all"]]
            our_rss = max(our_rss, o["peak_rss_mb"])
            conv.append(o["conv_gflops"]); sgemm.append(o["sgemm_gflops"])
        tm, om = statistics.median(torch_steps), statistics.median(our_steps)
        r = {"model": a.model, "ranks": 2 if a.ddp else 1, "size": size, "batch": batch, "threads": threads,
             "torch_amp": a.amp, "torch_channels_last": a.channels_last, "precision": a.precision,
             "torch_images_per_s": batch / tm, "ours_images_per_s": batch / om, "ratio": tm / om,
             "torch_step_s": torch_steps, "ours_step_s": our_steps,
             "torch_peak_rss_mb": torch_rss, "ours_peak_rss_mb": our_rss, "rss_ratio": our_rss / torch_rss,
             "conv_gflops": statistics.median(conv), "sgemm_gflops": statistics.median(sgemm)}
        results.append(r)
        print(f"{size:>5} {batch:>5} {threads:>3} | {r['torch_images_per_s']:>11.2f} {r['ours_images_per_s']:>10.2f} "
              f"{r['ratio']:>5.2f}x | {torch_rss:>12.0f} {our_rss:>11.0f} {r['rss_ratio']:>9.2f} | "
              f"{r['conv_gflops']:.1f} / {r['sgemm_gflops']:.1f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
