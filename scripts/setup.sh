#!/usr/bin/env bash
# One set-up path for the README's two commands (idempotent; seconds when done):
#  1. Debian packages the project needs (dataset-fashion-mnist for data, tmux
#     for the end-to-end TUI test, libsixel-bin to decode sixel in tests, jq for
#     the docs' scripting recipes, which tests/tests/docs_recipes.rs runs;
#     postgresql for the PostgreSQL store's tests, which start their own
#     throwaway clusters with its initdb and pg_ctl: tests/src/pg.rs);
#  2. a venv outside the repository with PyPI torch==2.11.0 (the libtorch that
#     tch 0.24.0 links) and the test-side Python (diffusers, numpy, grpcio);
#     $DDIM_VENV overrides its place (default ~/.cache/ddim/venv);
#  3. nothing else: the build itself is done by install.sh (which run.sh calls)
#     and test.sh with LIBTORCH_USE_PYTORCH=1 (scripts/env.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/env.sh"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# 1. Debian packages.
need=()
for p in dataset-fashion-mnist tmux libsixel-bin jq postgresql; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. The venv with libtorch.
req="$here/requirements.txt"
stamp="$DDIM_VENV/.ddim-requirements"
if [ ! -x "$DDIM_VENV/bin/python" ] || ! cmp -s "$req" "$stamp"; then
  log "creating the Python venv at $DDIM_VENV (torch 2.11.0 is ~4.6 GB; about a minute)"
  python3 -m venv "$DDIM_VENV"
  "$DDIM_VENV/bin/pip" install -q --upgrade pip
  "$DDIM_VENV/bin/pip" install -q -r "$req"
  cp "$req" "$stamp"
fi
log "venv ready: $("$DDIM_VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
