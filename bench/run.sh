#!/usr/bin/env bash
# The engine benchmark of docs/benchmarks.md: ddimd vs diffusers on the same
# (random) weights and device, in one run, for a ~1M-parameter 32×32 model
# (`tiny`) and the DDPM CIFAR-10 UNet (`cifar10`, 3×32×32, 35.7M).
# usage: bench/run.sh [DEVICE] [MAX_SECONDS] [THREADS]   → a markdown table on stdout
# THREADS: CPU threads for both sides (0: each library's default).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
device=${1:-cpu}; max=${2:-60}; threads=${3:-0}
B=${DDIMD_BIN:-target/release/ddimd}
[ -x "$B" ] || cargo build --release -q -p ddimd --bin ddimd
tmp=$(mktemp -d)
for spec in "tiny 1" "cifar10 3"; do
  set -- $spec
  "$B" init-model --preset "$1" --channels "$2" --out "$tmp/$1" 2>/dev/null
  "$B" bench --model "$tmp/$1" --device "$device" --batch 1,64 --steps 10,20,50,100 --max-seconds "$max" --torch-threads "$threads" | sed "s/^{/{\"model\":\"$1\",/" >> "$tmp/results.jsonl"
  python bench/diffusers_bench.py "$tmp/$1" "$device" 1,64 10,20,50,100 5 "$max" "$threads" | sed "s/^{/{\"model\":\"$1\",/" >> "$tmp/results.jsonl"
done
python - "$tmp/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def get(model, impl, batch, key, steps=None):
    for r in rows:
        if r["model"] == model and r["impl"] == impl and r["batch"] == batch and r.get("steps") == steps and key in r:
            return r[key]
def fmt(v, d=2):
    return "—" if v is None else f"{v:.{d}f}"
print("| model | batch | measure | ddimd | diffusers | ddimd / diffusers |")
print("|---|---|---|---|---|---|")
for m in ("tiny", "cifar10"):
    for b in (1, 64):
        o, d = get(m, "ddimd", b, "ms_per_eval"), get(m, "diffusers", b, "ms_per_eval")
        print(f"| {m} | {b} | ms per UNet eval | {fmt(o,1)} | {fmt(d,1)} | {fmt(d/o if o and d else None)} (speed) |")
        for s in (10, 20, 50, 100):
            o, d = get(m, "ddimd", b, "images_per_s", s), get(m, "diffusers", b, "images_per_s", s)
            print(f"| {m} | {b} | images/s, S = {s} | {fmt(o)} | {fmt(d)} | {fmt(o/d if o and d else None)} |")
PY
rm -rf "$tmp"
