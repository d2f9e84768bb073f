#!/usr/bin/env bash
# The engine benchmark of docs/benchmarks.md: ddimd (eager and compiled) vs diffusers
# (eager and torch.compile) on the same (random) weights and device, in one run, for a
# ~1M-parameter 32×32 model (`tiny`) and the DDPM CIFAR-10 UNet (`cifar10`, 3×32×32, 35.7M).
# usage: bench/run.sh [DEVICE] [MAX_SECONDS] [THREADS]   → a markdown table on stdout
# THREADS: CPU threads for all sides (0: each library's default). The compiled packages
# are compiled for the same thread count (`ddimd compile --torch-threads`): a CPU package
# runs with the thread count it was compiled for.
# BENCH_MODELS="tiny cifar10" (default) picks the models; BENCH_STEPS="10,20,50,100";
# BENCH_BATCHES="1,64"; BENCH_SOLVERS="ddim,dpmpp-2m" (each S is sampled with each solver;
# a model call costs the same for both, the rows show the solver's own overhead).
# The compiled rows: `ddimd compile` (AOTInductor, one package per batch size, into a
# scratch cache) then `ddimd bench --compiled require`; compile times and the load
# average go to stderr and under the table, not into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
device=${1:-cpu}; max=${2:-60}; threads=${3:-0}
models=${BENCH_MODELS:-tiny cifar10}; steps=${BENCH_STEPS:-10,20,50,100}
batches=${BENCH_BATCHES:-1,64}; solvers=${BENCH_SOLVERS:-ddim,dpmpp-2m}
B=${DDIMD_BIN:-target/release/ddimd}
[ -x "$B" ] || cargo build --release -q -p ddimd --bin ddimd
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out="$tmp/results.jsonl"
notes="$tmp/notes"
note() { echo "$*" >&2; echo "$*" >> "$notes"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
tag() { sed "s/^{/{\"model\":\"$1\",/" >> "$out"; }
note "start $(date -u +%H:%M:%S) UTC, load average $(load)"
for m in $models; do
  case $m in tiny) ch=1 ;; cifar10) ch=3 ;; *) echo "unknown model $m" >&2; exit 2 ;; esac
  "$B" init-model --preset "$m" --channels "$ch" --out "$tmp/$m" 2>/dev/null
  common=(--model "$tmp/$m" --device "$device" --batch "$batches" --steps "$steps" --solver "$solvers"
          --max-seconds "$max" --torch-threads "$threads")
  "$B" bench "${common[@]}" --compiled off | tag "$m"
  note "$m: ddimd eager done, load average $(load)"
  python bench/diffusers_bench.py "$tmp/$m" "$device" "$batches" "$steps" 5 "$max" "$threads" eager "$solvers" | tag "$m"
  note "$m: diffusers eager done, load average $(load)"
  t0=$(date +%s)
  "$B" compile --model "$tmp/$m" --device "${device%%:*}" --batch "$batches" --torch-threads "$threads" \
    --cache "$tmp/cache" >/dev/null
  note "$m: ddimd compile (batch $batches, $threads thread(s)) took $(( $(date +%s) - t0 )) s, load average $(load)"
  "$B" bench "${common[@]}" --compiled require --compiled-cache "$tmp/cache" | tag "$m"
  note "$m: ddimd compiled done, load average $(load)"
  t0=$(date +%s)
  python bench/diffusers_bench.py "$tmp/$m" "$device" "$batches" "$steps" 5 "$max" "$threads" compile "$solvers" | tag "$m"
  note "$m: diffusers + torch.compile (warm-ups included) took $(( $(date +%s) - t0 )) s, load average $(load)"
done
note "end $(date -u +%H:%M:%S) UTC, load average $(load)"
python - "$out" "$models" "$steps" "$batches" "$solvers" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
models = sys.argv[2].split()
steps = [int(s) for s in sys.argv[3].split(",")]
batches = [int(b) for b in sys.argv[4].split(",")]
solvers = sys.argv[5].split(",")
def get(model, impl, batch, key, steps=None, solver=None):
    for r in rows:
        if (r["model"] == model and r["impl"] == impl and r["batch"] == batch
                and r.get("steps") == steps and key in r
                and (solver is None or r.get("solver", "ddim") == solver)):
            return r[key]
def fmt(v, d=2):
    return "—" if v is None else f"{v:.{d}f}"
def ratio(a, b):
    return fmt(a / b if a and b else None)
impls = ("ddimd", "ddimd-compiled", "diffusers", "diffusers-compile")
print("| model | batch | measure | ddimd | ddimd compiled | diffusers | diffusers + torch.compile "
      "| compiled / eager ddimd | ddimd / diffusers + tc | compiled / diffusers | compiled / diffusers + tc |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    for b in batches:
        o, c, d, dc = (get(m, i, b, "ms_per_eval") for i in impls)
        # ms: lower is better, so the speed ratios are inverted.
        print(f"| {m} | {b} | ms per UNet eval | {fmt(o,1)} | {fmt(c,1)} | {fmt(d,1)} | {fmt(dc,1)} "
              f"| {ratio(o, c)} | {ratio(dc, o)} | {ratio(d, c)} | {ratio(dc, c)} |")
        for s in steps:
            for so in solvers:
                o, c, d, dc = (get(m, i, b, "images_per_s", s, so) for i in impls)
                print(f"| {m} | {b} | images/s, S = {s}, {so} | {fmt(o)} | {fmt(c)} | {fmt(d)} | {fmt(dc)} "
                      f"| {ratio(c, o)} | {ratio(o, dc)} | {ratio(c, d)} | {ratio(c, dc)} |")
PY
echo
sed 's/^/    /' "$notes"
