#!/usr/bin/env bash
# Runs the benchmarks behind the figures in README.md and docs/ and writes their data files, each
# with the CPU it ran on (model, vCPUs, AVX-512/bf16/AMX flags from /proc/cpuinfo), the load
# average and the command; then `python3 tools/docs_tables.py` rewrites the tables from them.
#
#   tools/measure_performance.sh [-o DIR] WHAT...    (DIR: docs/data; a scratch DIR to look first)
#
#   vs-torch [ROUNDS]  the seed's UNet against PyTorch at 128 (ROUNDS, default 3) and 394 (1 round),
#                      1 and 2 threads, batch 16                    -> vs_pytorch_unet.json
#   resnet [ROUNDS]    the ResNet-18 UNet against PyTorch at 128    -> vs_pytorch_resnet.json
#   ddp [ROUNDS]       mpirun -n 2 against PyTorch DDP (gloo) at 128 -> vs_pytorch_ddp.json
#   scaling DATA [R]   -n 2 against -n 1 and two independent runs: bench twice, training on DATA
#                      (e.g. data/icbm128 from launch/fetch-icbm.sh) -> scaling_two_ranks.json
#   standin [R]        bench against tools/machine/sync_step.c, R rounds each -> machine_standin.json
#   bf16 [R]           fp32 and bf16 bench steps alternated, R pairs at 128 (default 7) and
#                      (R+1)/2 at 394          -> precision_step_128.json, precision_step_394.json
#   kernels            one thread's 3x3 kernels, fp32 against bf16 (tools/machine/conv_rates.c)
#                                                                   -> precision_kernels.json
#   mixed SIZE [R]     ours (fp32, bf16) against PyTorch's four configurations (fp32 and bf16
#                      autocast, NCHW and channels_last), 2 threads, R rounds (default 3)
#                                        -> vs_pytorch_mixed.json (128), vs_pytorch_mixed_SIZE.json
#   avx2 [R]           on a CPU without AVX-512: ours in fp32 (our bf16 runs portable kernels
#                      there) against PyTorch's four configurations at 128, 2 threads, R rounds
#                      (default 3)                                  -> vs_pytorch_avx2.json
#   shares [R]         each layer kind's share of its own peak (bench's FMA peak and triad), fp32
#                      and bf16 at 128 and 394, R runs each (default 3)  -> peak_shares.json
#
# Needs a release build (swift build -c release), Open MPI, and for vs-torch, resnet, ddp and mixed a
# Python with torch (PYTHON=/path/to/python; resnet also torchvision). Timings need a quiet
# machine: the load average is recorded beside them. Not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/data
if [ "${1:-}" = -o ]; then out="$2"; shift 2; fi
[ $# -gt 0 ] || { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
mkdir -p "$out"
py="${PYTHON:-python3}"
bin="${UNET_DIST_BIN:-$PWD/.build/release/unet-dist}"
[ -x "$bin" ] || { echo "error: $bin: no release build (swift build -c release)" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

# record FILE WHAT SOFTWARE COMMAND... < body.json (one JSON object): FILE = the body's keys plus what, cpu,
# software, commands and the load average, written whole or not at all.
record() {
  local file="$1" what="$2" software="$3" body; shift 3
  body="$(cat)"
  BODY="$body" python3 - "$out/$file" "$what" "$software" "$@" <<'EOF'
import json, os, sys
path, what, software, commands = sys.argv[1], " ".join(sys.argv[2].split()), sys.argv[3], sys.argv[4:]
info = open("/proc/cpuinfo").read().splitlines()
model = next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), "unknown")
flags = next((l.split(":", 1)[1].split() for l in info if l.startswith("flags")), [])
wanted = ["avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
if "avx512f" not in flags:
    wanted = ["avx2", "fma"]
cpu = {"model": model, "vcpus": os.cpu_count(), "flags": [f for f in wanted if f in flags],
       "amx": any(f.startswith("amx") for f in flags), "flags_complete": True}
body = json.loads(os.environ["BODY"])
doc = {"what": what, "cpu": cpu, "software": software, "commands": commands,
       "load_average": round(os.getloadavg()[0], 1), **body}
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
os.replace(tmp, path)
print(f"wrote {path}")
EOF
}

# {"results": [...]}: the lists that tools/bench_vs_torch.py --json wrote, joined.
results() {
  python3 -c 'import json, sys; print(json.dumps({"results": sum((json.load(open(f)) for f in sys.argv[1:]), [])}))' "$@"
}
torch_version() { "$py" -c 'import torch; print(torch.__version__)'; }

vs_torch() {
  local rounds="${1:-3}"
  "$py" tools/bench_vs_torch.py --preset 128 --steps 5 --rounds "$rounds" --json "$work/a.json"
  "$py" tools/bench_vs_torch.py --size 394 --steps 5 --rounds 1 --json "$work/b.json"
  results "$work/a.json" "$work/b.json" | record vs_pytorch_unet.json \
    "the seed's UNet: one training step (forward, BCEWithLogits, backward, Adam), unet-dist bench against the seed's
 PyTorch code, batch 16, synthetic images" \
    "OpenBLAS $(blas_core), PyTorch $(torch_version) CPU" \
    "python tools/bench_vs_torch.py --preset 128 --steps 5 --rounds $rounds" \
    "python tools/bench_vs_torch.py --size 394 --steps 5 --rounds 1"
}

resnet() {
  local rounds="${1:-2}"
  "$py" tools/bench_vs_torch.py --model unet-resnet --size 128 --steps 5 --rounds "$rounds" --json "$work/r.json"
  results "$work/r.json" | record vs_pytorch_resnet.json \
    "the seed's UNetResnet (torchvision's resnet18 as the encoder): one training step, unet-dist bench against
 PyTorch, batch 16, synthetic images" \
    "OpenBLAS $(blas_core), PyTorch $(torch_version) CPU" \
    "python tools/bench_vs_torch.py --model unet-resnet --size 128 --steps 5 --rounds $rounds"
}

ddp() {
  local rounds="${1:-3}"
  "$py" tools/bench_vs_torch.py --ddp --size 128 --steps 5 --rounds "$rounds" --json "$work/d.json"
  results "$work/d.json" | record vs_pytorch_ddp.json \
    "data parallel: mpirun -n 2 unet-dist bench --threads 1 against PyTorch DistributedDataParallel (gloo),
 2 processes x 1 thread, global batch 16" \
    "OpenBLAS $(blas_core), $(mpirun --version | head -1), PyTorch $(torch_version) CPU" \
    "python tools/bench_vs_torch.py --ddp --size 128 --steps 5 --rounds $rounds"
}

blas_core() { "$bin" bench --size 16 --batch-size 1 --steps 1 --sgemm-size 0 --json | tail -1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["blas_core"] + " kernels")'; }

# One tools/bench_scaling.sh run as a JSON object: its per-run lines and medians.
scaling_run() {
  local workload="$1"; shift
  tools/bench_scaling.sh "$@" | tee "$work/s.txt" >&2
  python3 - "$workload" "tools/bench_scaling.sh $*" "$work/s.txt" <<'EOF'
import json, re, statistics, sys
workload, command, text = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
runs = [tuple(map(float, m)) for m in re.findall(r"-n 1 ([0-9.]+), -n 2 ([0-9.]+), .*= ([0-9.]+) images/s", text)]
n1, n2, pair = (statistics.median(c) for c in zip(*runs))
print(json.dumps({"command": command, "workload": workload, "n1": n1, "n2": n2, "pair": pair,
                  "speedup": n2 / n1, "of_reference": n2 / pair, "runs": runs}))
EOF
}

scaling() {
  local data="${1:?scaling needs a data set (launch/fetch-icbm.sh data/icbm128 128)}" r="${2:-5}"
  { scaling_run bench --bench "$r"; scaling_run bench --bench "$r"; scaling_run train "$data" "$r"; } > "$work/runs.jsonl"
  python3 -c 'import json, sys; print(json.dumps({"measurements": [json.loads(l) for l in open(sys.argv[1])]}))' \
    "$work/runs.jsonl" | record scaling_two_ranks.json \
    "-n 2 against -n 1 (1 thread per rank, batch 16 at 128x128), alternated runs, medians of $r each; the reference
 is two independent -n 1 runs at once with batch 8 each (what two busy cores give without communication)" \
    "OpenBLAS $(blas_core), $(mpirun --version | head -1)" \
    "tools/bench_scaling.sh --bench $r (twice)" "tools/bench_scaling.sh $data $r"
}

standin() {
  local r="${1:-8}"
  { scaling_run bench --bench "$r"; scaling_run synthetic --synthetic "$r"; } > "$work/runs.jsonl"
  python3 - "$work/runs.jsonl" <<'EOF' |
import json, sys
names = {"bench": "unet-dist `bench`", "synthetic": "`sync_step.c`"}
progs = []
for line in open(sys.argv[1]):
    m = json.loads(line)
    progs.append({"program": names[m["workload"]], "n1": m["n1"], "n2": m["n2"], "pair": m["pair"],
                  "rounds": len(m["runs"]), "rounds_at_1_9x": sum(1 for a, b, _ in m["runs"] if b / a >= 1.9),
                  "runs": m["runs"]})
print(json.dumps({"programs": progs}))
EOF
    record machine_standin.json \
      "-n 2 against -n 1 for unet-dist bench (128x128, 1 thread per rank) and for tools/machine/sync_step.c, a
 stand-in step with none of unet-dist's code (per image a fixed number of L1-fed FMAs and a pass over a batch-sized
 buffer, cut into 29 segments each ending in a 128-double allreduce); $r rounds of each; medians of the rounds'
 images/s" \
      "$(mpirun --version | head -1)" "tools/bench_scaling.sh --bench $r" "tools/bench_scaling.sh --synthetic $r"
}

# R pairs of bench steps, fp32 then bf16, at SIZE.
bf16_pairs() {
  local size="$1" r="$2"; shift 2
  for ((i = 1; i <= r; i++)); do
    for p in fp32 bf16; do
      "$bin" bench --size "$size" --batch-size 16 --threads 2 --precision "$p" --json "$@" | tail -1 > "$work/$p.json"
    done
    python3 -c '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
conv = lambda j: round(j["forward_ms"]["conv"] + j["backward_ms"]["conv"])
print(json.dumps({"fp32": round(a["images_per_s"], 2), "bf16": round(b["images_per_s"], 2),
                  "conv_ms_fp32": conv(a), "conv_ms_bf16": conv(b), "rss": [a["peak_rss_mb"], b["peak_rss_mb"]]}))' \
      "$work/fp32.json" "$work/bf16.json"
  done
}

bf16() {
  local r="${1:-7}" size n extra
  for size in 128 394; do
    # 394 takes about ten times as long per step: fewer steps, half the pairs, no sgemm.
    if [ "$size" = 128 ]; then extra=(--steps 5); n="$r"; else extra=(--steps 2 --sgemm-size 0); n=$(((r + 1) / 2)); fi
    bf16_pairs "$size" "$n" "${extra[@]}" > "$work/pairs.jsonl"
    python3 -c '
import json, sys
pairs = [json.loads(l) for l in open(sys.argv[1])]
rss = {"fp32": round(max(p["rss"][0] for p in pairs)), "bf16": round(max(p["rss"][1] for p in pairs))}
for p in pairs: del p["rss"]
print(json.dumps({"size": int(sys.argv[2]), "pairs": pairs, "peak_rss_mb": rss}))' "$work/pairs.jsonl" "$size" |
      record "precision_step_$size.json" "a UNet training step at ${size}x$size, fp32 and bf16 alternated, wall time" \
        "OpenBLAS $(blas_core)" "unet-dist bench --size $size --batch-size 16 --threads 2 ${extra[*]} --precision P --json"
  done
}

kernels() {
  # The toolchain's clang, which builds the package's C kernels (gcc's code for them differs).
  clang -O3 -I Sources/CKernels/include -I Sources/CKernels -o "$work/conv_rates" tools/machine/conv_rates.c \
    Sources/CKernels/cconv.c Sources/CKernels/cconv_bf16.c Sources/CKernels/cconv_bf16_weight_grad.c -lm
  for shape in "64 128" "16 128" "128 32"; do "$work/conv_rates" $shape 9; done | tee "$work/k.txt" >&2
  python3 - "$work/k.txt" <<'EOF' |
import json, re, sys
text = open(sys.argv[1]).read()
layers = []
for block in re.split(r"\n(?=\d+ -> )", text.strip()):
    c, s = map(int, re.match(r"(\d+) -> \d+ channels, (\d+)x", block).groups())
    peak = float(re.search(r"peak\s+([0-9.]+)", block).group(1))
    f32, f16 = map(float, re.search(r"forward\s+float32\s+([0-9.]+)\s+bf16\s+([0-9.]+)", block).groups())
    g32, g16 = map(float, re.search(r"weight grad\s+float32\s+([0-9.]+)\s+bf16\s+([0-9.]+)", block).groups())
    layers.append({"channels": c, "size": s, "peak": peak, "forward_fp32": f32, "forward_bf16": f16,
                   "wgrad_fp32": g32, "wgrad_bf16": g16})
print(json.dumps({"layers": layers}))
EOF
    record precision_kernels.json \
      "one 3x3 convolution layer, one thread, float32 and bf16 kernels alternated, medians of 9 rounds, GFLOP/s in
 the thread's CPU time; the peak is a vdpbf16ps loop (64 FLOP per instruction, 24 independent sums)" \
      "$(clang --version | head -1)" \
      "clang -O3 -I Sources/CKernels/include -I Sources/CKernels -o /tmp/conv_rates tools/machine/conv_rates.c\
 Sources/CKernels/cconv.c Sources/CKernels/cconv_bf16.c Sources/CKernels/cconv_bf16_weight_grad.c -lm" \
      "/tmp/conv_rates 64 128 9; /tmp/conv_rates 16 128 9; /tmp/conv_rates 128 32 9"
}

# mixed_run SIZE ROUNDS STEPS OURS FILE: tools/bench_vs_torch.py --mixed with our precisions OURS
# (fp32,bf16 or fp32), its medians and fastest steps written to FILE.
mixed_run() {
  local size="$1" r="$2" steps="$3" ours="$4" file="$5" which="fp32 and bf16"
  [ "$ours" = fp32 ] && which="fp32"
  "$py" tools/bench_vs_torch.py --mixed --ours "$ours" --size "$size" --threads 2 --rounds "$r" --steps "$steps" \
    --json "$work/m.json"
  python3 - "$work/m.json" <<'EOF' |
import json, statistics, sys
runs = json.load(open(sys.argv[1]))
names = {"torch fp32 NCHW": "PyTorch fp32 NCHW", "torch fp32 channels_last": "PyTorch fp32 channels_last",
         "torch bf16 autocast NCHW": "PyTorch bf16 autocast NCHW",
         "torch bf16 autocast channels_last": "PyTorch bf16 autocast channels_last",
         "ours fp32": "ours fp32", "ours bf16": "ours bf16"}
rows = []
for key, name in names.items():
    rs = [r for r in runs if r["configuration"] == key]
    if not rs:
        continue
    steps = [s for r in rs for s in r["step_s"]]
    med = statistics.median(steps)
    rows.append({"configuration": name, "images_per_s": round(rs[0]["batch"] / med, 2),
                 "median_ms": round(1000 * med, 1), "fastest_ms": round(1000 * min(steps), 1),
                 "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs))})
print(json.dumps({"size": runs[0]["size"], "rows": rows}))
EOF
    record "$file" \
      "ours against PyTorch's four configurations at ${size}x$size, batch 16, 2 threads: each round runs PyTorch in
 float32 NCHW, float32 channels_last, bf16 autocast and bf16 autocast + channels_last, then ours in $which, one
 process each, 1 warm-up and $steps timed steps; medians of the $((r * steps)) steps of each, and the fastest step" \
      "PyTorch $(torch_version) (oneDNN), OpenBLAS $(blas_core)" \
      "tools/bench_vs_torch.py --mixed --ours $ours --size $size --threads 2 --rounds $r --steps $steps"
}

mixed() {
  local size="${1:?mixed needs a size (128 or 394)}" r="${2:-3}"
  if [ "$size" = 128 ]; then mixed_run 128 "$r" 5 fp32,bf16 vs_pytorch_mixed.json
  else mixed_run "$size" "$r" 3 fp32,bf16 "vs_pytorch_mixed_$size.json"; fi
}

avx2() {
  if grep -qw avx512f /proc/cpuinfo; then echo "error: avx2 is measured on a CPU without AVX-512" >&2; exit 1; fi
  mixed_run 128 "${1:-3}" 5 fp32 vs_pytorch_avx2.json
}

shares() {
  local r="${1:-3}" size p i steps
  for size in 128 394; do
    steps=5; [ "$size" = 128 ] || steps=3
    for ((i = 1; i <= r; i++)); do
      for p in fp32 bf16; do
        "$bin" bench --size "$size" --batch-size 16 --threads 2 --precision "$p" --steps "$steps" --sgemm-size 1024 \
          --json | tail -1 >> "$work/shares.jsonl"
      done
    done
  done
  python3 - "$work/shares.jsonl" <<'EOF' |
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: round(statistics.median(xs), 3)
configurations = []
for size in (128, 394):
    for p in ("fp32", "bf16"):
        rs = [r for r in runs if r["size"] == size and r["precision"] == p]
        kinds = {k: {"ms": med([r["forward_ms"][k] + r["backward_ms"][k] for r in rs]),
                     "rate": med([r["rate_by_kind"][k] for r in rs]),
                     "share": med([r["share_of_peak"][k] for r in rs])} for k in rs[0]["share_of_peak"]}
        configurations.append({"size": size, "precision": p, "runs": len(rs),
                               "images_per_s": med([r["images_per_s"] for r in rs]),
                               "step_ms": med([r["step_ms"] for r in rs]),
                               "conv_peak_gflops": med([r["conv_peak_gflops"] for r in rs]),
                               "triad_gbps": med([r["triad_gbps"] for r in rs]), "kinds": kinds})
print(json.dumps({"configurations": configurations}))
EOF
    record peak_shares.json \
      "each layer kind's rate against its own peak in a UNet training step, batch 16, 1 rank x 2 threads, rank 0's
 profile, forward and backward together: the convolutions' GFLOP/s against the FMA peak of the 2 threads (vdpbf16ps
 loop with bf16, one-thread sgemm with fp32, times 2), the memory-bound kinds' GB/s (every float32 element of every
 pass over a tensor counted once) against a 2-thread triad over 3 x 128 MB; medians of $r runs each" \
      "OpenBLAS $(blas_core)" \
      "unet-dist bench --size S --batch-size 16 --threads 2 --precision P --steps 5 (3 at 394) --sgemm-size 1024 --json"
}

while [ $# -gt 0 ]; do
  what="$1"; shift
  args=()
  while [ $# -gt 0 ] && ! [[ "$1" =~ ^(vs-torch|resnet|ddp|scaling|standin|bf16|kernels|mixed|shares)$ ]]; do
    args+=("$1"); shift
  done
  case "$what" in
    vs-torch) vs_torch "${args[@]}" ;;
    resnet) resnet "${args[@]}" ;;
    ddp) ddp "${args[@]}" ;;
    scaling) scaling "${args[@]}" ;;
    standin) standin "${args[@]}" ;;
    bf16) bf16 "${args[@]}" ;;
    kernels) kernels ;;
    mixed) mixed "${args[@]}" ;;
    avx2) avx2 "${args[@]}" ;;
    shares) shares "${args[@]}" ;;
    *) echo "error: unknown measurement '$what' (vs-torch, resnet, ddp, scaling, standin, bf16, kernels, mixed," \
         "avx2, shares)" >&2; exit 2 ;;
  esac
done
echo "now: python3 tools/docs_tables.py   (rewrites the tables in README.md and docs/ from $out)"
