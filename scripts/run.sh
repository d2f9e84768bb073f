#!/usr/bin/env bash
# The main job: build (and link ddim and ddimd into a directory on PATH, see
# scripts/install.sh), start ddimd on its embedded store with the shipped
# model (seeding 8 Fashion-MNIST test images into the library on the very
# first start), open the ddim TUI, and stop the daemon when the TUI exits.
# Extra arguments go to the TUI. Set DDIMD_ADDR to use another port.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install.sh
addr="${DDIMD_ADDR:-127.0.0.1:7860}"
data="${DDIMD_DATA:-${XDG_DATA_HOME:-$HOME/.local/share}/ddimd}"
log="$data/ddimd.log"
mkdir -p "$data"
./target/release/ddimd serve --addr "$addr" --data "$data" --seed-images 8 >>"$log" 2>&1 &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT INT TERM
echo "ddimd started (pid $daemon, log $log); opening the TUI…" >&2
./target/release/ddim --addr "http://$addr" "$@"
