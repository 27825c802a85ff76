#!/usr/bin/env bash
# Set up hpsrl in ./.venv on a Debian/Ubuntu machine with Python >= 3.10: idempotent, quick when done.
# Usage: bash scripts/setup.sh   (then: source .venv/bin/activate)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "setup: hpsrl needs Python >= 3.10 as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || {
    echo "setup: could not create .venv; on Debian: apt-get install python3-venv" >&2
    exit 1
  }
fi

# Reinstall only when the dependencies changed.
stamp=.venv/.hpsrl-installed
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first and pinned: the CPU build; an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet "torch==${HPSRL_TORCH_VERSION:-2.13.0}"
  .venv/bin/python -m pip install --quiet -e ".[mpi,box2d,slurm,test,video]"
  echo "$want" > "$stamp"
fi
