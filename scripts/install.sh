#!/usr/bin/env bash
# Puts `ddim` and `ddimd` on PATH, so the recipes of README.md and docs/ work as typed:
# set-up if needed, the release build (seconds when up to date; scripts/run.sh needs it
# anyway), then symbolic links to target/release/{ddim,ddimd} in one directory:
#   $DDIM_BIN_DIR when set, else ~/.local/bin when it is on PATH, else ~/.cargo/bin when
#   it is on PATH (rustup puts it there), else ~/.local/bin (and a line saying how to add
#   it to PATH).
# The links follow later builds. The binaries need nothing else: ddimd carries an rpath
# to the venv's libtorch, and its default --model is this checkout's models/fashion-mnist.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release --locked --bins -q

on_path() { case ":$PATH:" in *":$1:"*) return 0 ;; esac; return 1; }
dir="${DDIM_BIN_DIR:-}"
if [ -z "$dir" ]; then
  if on_path "$HOME/.local/bin"; then
    dir="$HOME/.local/bin"
  elif on_path "$HOME/.cargo/bin"; then
    dir="$HOME/.cargo/bin"
  else
    dir="$HOME/.local/bin"
  fi
fi
mkdir -p "$dir"
for b in ddim ddimd; do
  ln -sfn "$PWD/target/release/$b" "$dir/$b"
done
printf '\033[1m[install]\033[0m ddim and ddimd linked in %s\n' "$dir" >&2
if ! on_path "$dir"; then
  printf '\033[1m[install]\033[0m %s is not on PATH: add this line to ~/.profile (or ~/.bashrc) and open a new shell:\n  export PATH="%s:$PATH"\n' "$dir" "$dir" >&2
fi
