# Source this to build with cargo by hand: it points torch-sys at the venv that
# scripts/setup.sh made (PyPI torch==2.11.0, what tch 0.24.0 expects).
DDIM_VENV="${DDIM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ddim/venv}"
export DDIM_VENV
export VIRTUAL_ENV="$DDIM_VENV"
export PATH="$DDIM_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
