#!/usr/bin/env bash
# Creates (or reuses) a virtual environment with yolotr and everything it needs.
#
#   bash launch/setup_env.sh [VENV_DIR]        (default: .venv)
#
# Why a script and not only `pip install -e .`: DeepSpeed is published as a source distribution whose
# setup.py imports torch. pip builds it in an isolated environment that would download a second, multi-GB
# CUDA torch; installing it with --no-build-isolation against the torch already in the venv avoids that.
# torch itself is installed only when missing: users bring the build that matches their CUDA.
set -euo pipefail

venv="${1:-.venv}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

"${pip[@]}" --upgrade pip setuptools wheel
if ! "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    # The versions named here are the ones this project is tested with; any torch>=2.4 works.
    "${pip[@]}" "torch${YOLOTR_TORCH_SPEC:-==2.14.1}" "torchvision${YOLOTR_TORCHVISION_SPEC:-==0.29.1}"
fi
if ! "$venv/bin/python" -c "import deepspeed" 2>/dev/null; then
    "${pip[@]}" --no-build-isolation "deepspeed>=0.15"
fi
# tensorboard: the run folder's event files (log.tensorboard); a run without the package warns and goes on.
# remote: shards read from s3:// and https:// URLs.
"${pip[@]}" -e "${root}[test,tensorboard,remote]"
