#!/usr/bin/env bash
# Engine vs diffusers on the same weights and device, in one run:
# images/s of `ddimd sample` and of diffusers' UNet2DModel + DDIMScheduler loop
# (bench/diffusers_sample.py), both after one warm-up call, both timing only the
# sampling loop. usage: bench/engine_vs_diffusers.sh [MODEL] [DEVICE] [COUNT] [STEPS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
model=${1:-models/fashion-mnist}; device=${2:-cpu}; count=${3:-64}; steps=${4:-20}
B=${DDIMD_BIN:-target/release/ddimd}
[ -x "$B" ] || cargo build --release -q -p ddimd --bin ddimd
for batch in 1 64; do
  ours=$("$B" sample --model "$model" --device "$device" --count "$count" --batch "$batch" --steps "$steps" --out /tmp/bench-ddimd.npy 2>&1 \
    | sed -n 's/.*: \([0-9.]*\) images\/s.*/\1/p')
  ref=$(python bench/diffusers_sample.py "$model" "$count" "$steps" "$batch" "$device" | python -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
  python - "$batch" "$ours" "$ref" <<'PY'
import sys
b, ours, ref = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
print(f"batch {b:>3}: ddimd {ours:8.2f} img/s   diffusers {ref:8.2f} img/s   ratio {ours/ref:5.2f}")
PY
done
