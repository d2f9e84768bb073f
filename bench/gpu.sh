#!/usr/bin/env bash
# The GPU benchmark of docs/benchmarks.md ("GPU"), prepared to run in under 8 minutes on
# one GPU with no network: images/s of η = 0 sampling at S = 20 on the shipped model
# (models/fashion-mnist) for
#   ours:      ddimd eager fp32, ddimd eager bf16 (--dtype bf16), ddimd compiled (AOTInductor)
#   diffusers: UNet2DModel + DDIMScheduler eager, and with torch.compile(dynamic=False)
# at batch 1, 64 and 256, and the daemon's batching ratio: 16 concurrent one-image jobs
# on `ddimd serve --max-batch 16` against `--max-batch 1` (submitted with `ddim sample`).
#
# usage: bench/gpu.sh [--dry-run] [OUT.md]
#   OUT.md   where the markdown goes besides stdout [bench-gpu-<date>.md in the cwd]
#   --dry-run  DEVICE=cpu, batch 2, S = 2, one thread: every row runs for a few steps
#              (checks the script, not the figures)
# env: DEVICE (cuda), GPU_BATCHES (1,64,256), GPU_STEPS (20), DDIMD_BIN / DDIM_BIN
#      (target/release/ddimd, target/release/ddim), PYTHON (the Python with torch and
#      diffusers: $DDIM_VENV/bin/python, else python3), GPU_BUDGET_S (450: rows that
#      would start after it are skipped).
#
# Nothing is built and nothing is fetched: the binaries must be there (built where they
# run or carried), the UNet's libtorch is found from $DDIM_VENV or the Python's torch.
# Every row fails soft: a missing Python, diffusers, a refused compile or a crash gives
# "—" and a note under the table, and the rest still runs.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dry=0
out_md=""
for a in "$@"; do
  case $a in
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) out_md=$a ;;
  esac
done
if [ $dry = 1 ]; then
  DEVICE=${DEVICE:-cpu}; batches=${GPU_BATCHES:-2}; S=${GPU_STEPS:-2}; threads=1
else
  DEVICE=${DEVICE:-cuda}; batches=${GPU_BATCHES:-1,64,256}; S=${GPU_STEPS:-20}; threads=0
fi
out_md=${out_md:-bench-gpu-$(date -u +%Y%m%d-%H%M%S).md}
budget=${GPU_BUDGET_S:-450}
MODEL=${GPU_MODEL:-models/fashion-mnist}
B=${DDIMD_BIN:-target/release/ddimd}
C=${DDIM_BIN:-target/release/ddim}
t_start=$(date +%s)
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
res="$tmp/results.jsonl"; : > "$res"
notes="$tmp/notes"; : > "$notes"
note() { echo "$*" >&2; echo "- $*" >> "$notes"; }
left() { echo $(( budget - ($(date +%s) - t_start) )); }
# run_row NAME CAP_S CMD...: runs CMD with a time cap (the smaller of CAP_S and the budget
# left), its JSON lines into the results; a failure or a timeout is a note, not an exit.
run_row() {
  local name=$1 cap=$2; shift 2
  local l; l=$(left)
  if [ "$l" -lt 15 ]; then note "$name: skipped (the ${budget} s budget is spent)"; return 1; fi
  [ "$cap" -gt "$l" ] && cap=$l
  local t0; t0=$(date +%s)
  timeout "$cap" "$@" > "$tmp/row.out" 2> "$tmp/row.err"
  local rc=$?
  grep '^{' "$tmp/row.out" >> "$res"
  if [ $rc -ne 0 ]; then
    local why; why=$(grep -v '^\s*$' "$tmp/row.err" | tail -n 1 | cut -c1-200)
    [ $rc = 124 ] && why="timed out after ${cap} s"
    note "$name: failed (exit $rc): ${why:-no message}"
    return 1
  fi
  echo "$name: $(( $(date +%s) - t0 )) s" >&2
  return 0
}

# --- what is here --------------------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  venv=${DDIM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ddim/venv}
  if [ -x "$venv/bin/python" ]; then PY=$venv/bin/python; else PY=$(command -v python3 || true); fi
fi
has_torch=0; has_diffusers=0
if [ -n "$PY" ] && "$PY" -c "import torch" 2>/dev/null; then
  has_torch=1
  "$PY" -c "import diffusers" 2>/dev/null && has_diffusers=1
  # The libtorch ddimd links: the Python's torch (same version) when ddimd's RUNPATH
  # folder is not on this machine.
  tl=$("$PY" -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
  export LD_LIBRARY_PATH="$tl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
have_ddimd=0
if [ -x "$B" ] && "$B" info > "$tmp/info.json" 2> "$tmp/info.err"; then have_ddimd=1; else
  note "ddimd: not runnable ($B: $(tail -n 1 "$tmp/info.err" 2>/dev/null | cut -c1-160)); our rows are empty"
fi
[ $has_torch = 1 ] || note "python: no Python with torch (${PY:-none}); the diffusers and compiled rows are empty"
[ $has_torch = 1 ] && [ $has_diffusers = 0 ] && note "python: $PY has torch but not diffusers (carry its wheel); the diffusers and compiled rows are empty"
gpu=$( [ $has_torch = 1 ] && "$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" 2>/dev/null || echo unknown)
echo "device $DEVICE ($gpu), batches $batches, S = $S, model $MODEL" >&2
dthreads=(); [ "$threads" -gt 0 ] && dthreads=(--torch-threads "$threads")

# --- AOTInductor packages, compiled in the background while the eager rows run ---------
# (CPU-heavy; on a 16-core machine it barely touches the eager GPU timings.)
comp_pid=""
if [ $have_ddimd = 1 ] && [ $has_diffusers = 1 ]; then
  ( timeout $(( budget / 2 )) "$B" compile --model "$MODEL" --device "${DEVICE%%:*}" --batch "$batches" \
      --cache "$tmp/cache" --python "$PY" "${dthreads[@]}" > "$tmp/compile.out" 2> "$tmp/compile.err"
    echo $? > "$tmp/compile.rc" ) &
  comp_pid=$!; pids+=("$comp_pid")
fi

common=(bench --model "$MODEL" --device "$DEVICE" --batch "$batches" --steps "$S" --repeat 5 --max-seconds 60 "${dthreads[@]}")
if [ $have_ddimd = 1 ]; then
  run_row "ddimd eager fp32" 90 "$B" "${common[@]}" --compiled off
  run_row "ddimd eager bf16" 90 "$B" "${common[@]}" --compiled off --dtype bf16
fi
if [ $has_diffusers = 1 ]; then
  run_row "diffusers eager" 120 "$PY" bench/diffusers_bench.py "$MODEL" "$DEVICE" "$batches" "$S" 5 60 "$threads" eager ddim
fi
if [ -n "$comp_pid" ]; then
  t0=$(date +%s); wait "$comp_pid"; rc=$(cat "$tmp/compile.rc" 2>/dev/null || echo 1)
  if [ "$rc" = 0 ]; then
    note "ddimd compile: done ($(grep -o '([0-9]* s,' "$tmp/compile.err" | tr -d '(,' | paste -sd' ' -) per package; waited $(( $(date +%s) - t0 )) s after the eager rows)"
    run_row "ddimd compiled" 90 "$B" "${common[@]}" --compiled require --compiled-cache "$tmp/cache"
  else
    note "ddimd compile: failed (exit $rc): $(grep -v '^\s*$' "$tmp/compile.err" | tail -n 1 | cut -c1-200)"
  fi
fi
if [ $has_diffusers = 1 ]; then
  run_row "diffusers + torch.compile" 240 "$PY" bench/diffusers_bench.py "$MODEL" "$DEVICE" "$batches" "$S" 5 60 "$threads" compile ddim
fi

# --- the daemon: 16 concurrent one-image jobs, --max-batch 16 vs 1 --------------------
daemon_row() {  # MAX_BATCH → prints "seconds for 16 jobs" or fails
  local mb=$1 d="$tmp/daemon-$1"; mkdir -p "$d"
  "$B" serve --addr 127.0.0.1:0 --device "$DEVICE" --model "$MODEL" --data "$d/data" --compiled off \
    --max-batch "$mb" --max-wait-ms 20 "${dthreads[@]}" > "$d/out" 2> "$d/err" &
  local sp=$!; pids+=("$sp")
  local addr="" i
  for i in $(seq 1 600); do
    addr=$(sed -n 's/^listening on //p' "$d/out" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 $sp 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then echo "serve did not listen: $(tail -n 1 "$d/err")" >&2; kill $sp 2>/dev/null; return 1; fi
  export DDIM_ADDR="http://$addr"
  # Warm-up (the model loads after the daemon listens: retried while it answers
  # UNAVAILABLE; CUDA context, first kernels), then 16 at once.
  local warm=0
  for i in $(seq 1 240); do
    if "$C" sample --wait --count 1 --steps "$S" --seed 999 > /dev/null 2> "$d/client.err"; then warm=1; break; fi
    grep -q "still loading" "$d/client.err" || break
    sleep 0.5
  done
  [ $warm = 1 ] || { echo "the warm-up job failed: $(tail -n 1 "$d/client.err")" >&2; kill $sp; return 1; }
  local t0 t1 k ok=1 cps=()
  t0=$(date +%s.%N)
  for k in $(seq 1 16); do "$C" sample --wait --count 1 --steps "$S" --seed "$k" > /dev/null 2>> "$d/client.err" & cps+=($!); done
  for k in "${cps[@]}"; do wait "$k" || ok=0; done
  t1=$(date +%s.%N)
  kill $sp 2>/dev/null; wait $sp 2>/dev/null
  [ $ok = 1 ] || { echo "a client failed: $(tail -n 1 "$d/client.err")" >&2; return 1; }
  echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'
}
d16=""; d1=""
if [ $have_ddimd = 1 ] && [ -x "$C" ] && [ "$(left)" -gt 30 ]; then
  d16=$(daemon_row 16 2> "$tmp/d16.err") || { note "daemon --max-batch 16: failed: $(tail -n 1 "$tmp/d16.err")"; d16=""; }
  d1=$(daemon_row 1 2> "$tmp/d1.err") || { note "daemon --max-batch 1: failed: $(tail -n 1 "$tmp/d1.err")"; d1=""; }
else
  note "daemon: skipped (no runnable $B or $C, or no time left)"
fi

# --- the table ---------------------------------------------------------------------------
{
  echo "### bench/gpu.sh, $(date -u '+%Y-%m-%d %H:%M') UTC: $DEVICE ($gpu), S = $S, $MODEL$([ $dry = 1 ] && echo ', DRY RUN (not figures)')"
  echo
  "${PY:-python3}" - "$res" "$batches" "$S" <<'PY' || { echo "(no Python to format the table; the raw results:)"; sed 's/^/    /' "$res"; }
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
batches = [int(b) for b in sys.argv[2].split(",")]
S = int(sys.argv[3])
def get(impl, b, key):
    for r in rows:
        if r.get("impl") == impl and r.get("batch") == b and key in r and (key == "ms_per_eval" or r.get("steps") == S):
            return r[key]
impls = [("ddimd", "ddimd eager fp32"), ("ddimd-bf16", "ddimd eager bf16"), ("ddimd-compiled", "ddimd compiled"),
         ("diffusers", "diffusers eager"), ("diffusers-compile", "diffusers + torch.compile")]
f = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"
print("| batch | " + " | ".join(n for _, n in impls) + " | best ours / diffusers + torch.compile |")
print("|---|" + "---|" * (len(impls) + 1))
for b in batches:
    ips = {i: get(i, b, "images_per_s") for i, _ in impls}
    ours = [v for i, v in ips.items() if i.startswith("ddimd") and v]
    best = max(ours) if ours else None
    ref = ips["diffusers-compile"]
    cells = " | ".join(f(ips[i]) for i, _ in impls)
    print(f"| {b} | {cells} | {f(best / ref if best and ref else None, 2)} |")
print()
print("images/s of a whole η = 0 sampling run at S = %d (batch / wall time, model calls and updates). ms per UNet evaluation (median of 5):" % S)
print()
print("| batch | " + " | ".join(n for _, n in impls) + " |")
print("|---|" + "---|" * len(impls))
for b in batches:
    print(f"| {b} | " + " | ".join(f(get(i, b, "ms_per_eval"), 2) for i, _ in impls) + " |")
PY
  [ -s "$res" ] || echo "(no row produced a figure)"
  echo
  if [ -n "$d16" ] && [ -n "$d1" ]; then
    echo "Daemon, 16 concurrent one-image S = $S jobs (\`ddim sample --wait --count 1\`): --max-batch 16 took $d16 s ($(awk "BEGIN{printf \"%.1f\", 16/$d16}") images/s), --max-batch 1 took $d1 s ($(awk "BEGIN{printf \"%.1f\", 16/$d1}") images/s): batching ratio **$(awk "BEGIN{printf \"%.2f\", $d1/$d16}")×**."
  else
    echo "Daemon batching ratio: not measured (see the notes)."
  fi
  echo
  echo "Total $(( $(date +%s) - t_start )) s. Notes:"
  echo
  [ -s "$notes" ] && cat "$notes" || echo "- none"
} | tee "$out_md"
echo "wrote $out_md" >&2
