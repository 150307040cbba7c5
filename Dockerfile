# syntax=docker/dockerfile:1
# yolotr in a container: a CUDA runtime base, yolotr installed exactly as on a bare machine (launch/setup_env.sh, the
# README's install), a non-root user, and the `yolotr` CLI as entrypoint.
#
#   docker build -t yolotr .
#   docker run --gpus all --ipc=host -v "$PWD/datasets:/opt/yolotr/datasets" -v "$PWD/runs:/opt/yolotr/runs" \
#       yolotr train --config configs/train/demo.yaml
#   all GPUs (accelerate, DDP):  docker run --gpus all --ipc=host ... --entrypoint launch/launch.sh yolotr \
#       -- --config configs/train/coco-yolov5.yaml
#
# --ipc=host (or --shm-size=8g): DataLoader workers and the ranks exchange tensors through /dev/shm, which is 64 MB
# in a container by default. torch comes from PyPI as setup_env.sh installs it; its wheels carry their own CUDA
# libraries, the base image supplies the driver hook-up (NVIDIA_* variables) and a matching CUDA major version.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    YOLOTR_VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/yolotr

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml or the install script change, not
# on every code change (torch alone is several GB). The empty package lets the editable install resolve; the real
# code replaces it below.
COPY pyproject.toml README.md ./
COPY launch/setup_env.sh launch/
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir yolotr && touch yolotr/__init__.py \
    && bash launch/setup_env.sh /opt/venv

COPY . .
RUN bash launch/setup_env.sh /opt/venv \
    && yolotr --help > /dev/null

# The code and the venv stay root-owned (read-only for the user); runs/ and datasets/ are the user's (or volumes).
# uid 1001: the Ubuntu base image already has uid 1000. Numeric, so that any runtime resolves it.
RUN useradd --create-home --shell /bin/bash --uid 1001 --user-group yolotr \
    && install -d -o yolotr -g yolotr runs datasets
USER 1001:1001

ENTRYPOINT ["yolotr"]
CMD ["--help"]
