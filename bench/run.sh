#!/usr/bin/env bash
# The engine benchmark of docs/benchmarks.md: ddimd (eager and compiled) vs diffusers
# (eager and torch.compile) on the same (random) weights and device, in one run, for a
# ~1M-parameter 32×32 model (`tiny`) and the DDPM CIFAR-10 UNet (`cifar10`, 3×32×32, 35.7M).
# usage: bench/run.sh [DEVICE] [MAX_SECONDS] [THREADS]   → a markdown table on stdout
# THREADS: CPU threads for all sides (0: each library's default).
# BENCH_MODELS="tiny cifar10" (default) picks the models; BENCH_STEPS="10,20,50,100".
# The compiled rows: `ddimd compile` (AOTInductor, batch 1 and 64, into a scratch cache)
# then `ddimd bench --compiled require`; compile times go to stderr, not the table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
device=${1:-cpu}; max=${2:-60}; threads=${3:-0}
models=${BENCH_MODELS:-tiny cifar10}; steps=${BENCH_STEPS:-10,20,50,100}
B=${DDIMD_BIN:-target/release/ddimd}
[ -x "$B" ] || cargo build --release -q -p ddimd --bin ddimd
tmp=$(mktemp -d)
out="$tmp/results.jsonl"
tag() { sed "s/^{/{\"model\":\"$1\",/" >> "$out"; }
for m in $models; do
  case $m in tiny) ch=1 ;; cifar10) ch=3 ;; *) echo "unknown model $m" >&2; exit 2 ;; esac
  "$B" init-model --preset "$m" --channels "$ch" --out "$tmp/$m" 2>/dev/null
  "$B" bench --model "$tmp/$m" --device "$device" --batch 1,64 --steps "$steps" --max-seconds "$max" --torch-threads "$threads" --compiled off | tag "$m"
  python bench/diffusers_bench.py "$tmp/$m" "$device" 1,64 "$steps" 5 "$max" "$threads" | tag "$m"
  t0=$(date +%s)
  "$B" compile --model "$tmp/$m" --device "${device%%:*}" --batch 1,64 --cache "$tmp/cache" >/dev/null
  echo "$m: ddimd compile (batch 1 and 64) took $(( $(date +%s) - t0 )) s" >&2
  "$B" bench --model "$tmp/$m" --device "$device" --batch 1,64 --steps "$steps" --max-seconds "$max" --torch-threads "$threads" --compiled require --compiled-cache "$tmp/cache" | tag "$m"
  t0=$(date +%s)
  python bench/diffusers_bench.py "$tmp/$m" "$device" 1,64 "$steps" 5 "$max" "$threads" compile | tag "$m"
  echo "$m: diffusers + torch.compile (warm-ups included) took $(( $(date +%s) - t0 )) s" >&2
done
python - "$out" "$models" "$steps" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
models, steps = sys.argv[2].split(), [int(s) for s in sys.argv[3].split(",")]
def get(model, impl, batch, key, steps=None):
    for r in rows:
        if r["model"] == model and r["impl"] == impl and r["batch"] == batch and r.get("steps") == steps and key in r:
            return r[key]
def fmt(v, d=2):
    return "—" if v is None else f"{v:.{d}f}"
def ratio(a, b):
    return fmt(a / b if a and b else None)
impls = ("ddimd", "ddimd-compiled", "diffusers", "diffusers-compile")
print("| model | batch | measure | ddimd | ddimd compiled | diffusers | diffusers + torch.compile "
      "| compiled / eager ddimd | compiled / diffusers | compiled / diffusers + torch.compile |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    for b in (1, 64):
        o, c, d, dc = (get(m, i, b, "ms_per_eval") for i in impls)
        print(f"| {m} | {b} | ms per UNet eval | {fmt(o,1)} | {fmt(c,1)} | {fmt(d,1)} | {fmt(dc,1)} "
              f"| {ratio(o, c)} | {ratio(d, c)} | {ratio(dc, c)} |")
        for s in steps:
            o, c, d, dc = (get(m, i, b, "images_per_s", s) for i in impls)
            print(f"| {m} | {b} | images/s, S = {s} | {fmt(o)} | {fmt(c)} | {fmt(d)} | {fmt(dc)} "
                  f"| {ratio(c, o)} | {ratio(c, d)} | {ratio(c, dc)} |")
PY
rm -rf "$tmp"
