#!/usr/bin/env bash
# Create .venv with everything mypt-lightning needs; safe to run again (it skips what is done).
#
# * torch: on a machine without an NVIDIA GPU the CPU build is installed (never the
#   multi-GB CUDA wheels): a local torch-2.13.0+cpu wheel if pip's find-links has one,
#   else the PyTorch CPU index. With a GPU, the default (CUDA) build.
#   Override with TORCH_SPEC / TORCH_INDEX_URL.
# * the GPT-2 BPE file for tiktoken, installed offline-capable (tools/setup_tokenizer.py).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# pip warns about every missing local index page; keep the real messages only.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "[setup] installing $TORCH_SPEC from $TORCH_INDEX_URL"
    quiet $PIP install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing $TORCH_SPEC (CUDA build)"
    quiet $PIP install "$TORCH_SPEC"
  elif ls ${PIP_FIND_LINKS:-/opt/wheels}/torch-*+cpu-*.whl >/dev/null 2>&1; then
    echo "[setup] no GPU: installing $TORCH_SPEC from the local CPU wheel"
    quiet $PIP install "$TORCH_SPEC"
  else
    echo "[setup] no GPU: installing $TORCH_SPEC (CPU build) from download.pytorch.org/whl/cpu"
    quiet $PIP install "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

stamp="$VENV/.mypt-installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing mypt-lightning and its dependencies"
  quiet $PIP install -e ".[dev]"
  touch "$stamp"
fi

"$VENV/bin/python" tools/setup_tokenizer.py
echo "[setup] ready: $VENV/bin/python ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
