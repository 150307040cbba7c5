"""Shared fixtures for evaluation tests: a tiny Transformer detector and its weights file."""

from __future__ import annotations

import copy

import pytest
import torch

# Two levels (strides 8 and 16), one C3TR: small enough for 64 px images on a CPU in milliseconds.
TINY_MODEL_YAML = {
    "nc": 3,
    "depth_multiple": 1.0,
    "width_multiple": 1.0,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "C3", [16]],
        [-1, 1, "Conv", [32, 3, 2]],
        [-1, 1, "C3", [32]],
        [-1, 1, "Conv", [64, 3, 2]],
        [-1, 1, "C3TR", [64]],
        [-1, 1, "SPPF", [64, 5]],
    ],
    "head": [[[4, 7], 1, "Detect", ["nc", "anchors"]]],
}
TINY_NAMES = ["circle", "square", "triangle"]


def tiny_model(seed: int = 0, confident: bool = True) -> torch.nn.Module:
    """A random-initialised tiny detector in eval mode.

    `confident` raises the objectness and class biases so that an untrained model scores ~0.5 instead of
    YOLOv5's prior ~1e-3: it then passes predict's and val's thresholds with plenty of boxes.
    """
    from yolotr.model.yolo import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(copy.deepcopy(TINY_MODEL_YAML), nc=len(TINY_NAMES))
    if confident:
        with torch.no_grad():
            for conv in model.detect.m:
                bias = conv.bias.view(model.detect.na, model.detect.no)  # (na·no,) -> (na, no), a view
                bias[:, 4] += 10.0
                bias[:, 5:] += 2.0
    return model.eval()


@pytest.fixture
def make_tiny_model():
    """`tiny_model` as a fixture, so test modules need not import conftest."""
    return tiny_model


@pytest.fixture
def tiny_names() -> list[str]:
    return list(TINY_NAMES)


@pytest.fixture
def tiny_weights(tmp_path):
    """A weights file (.safetensors) of a confident tiny model with an EMA copy; returns (path, model)."""
    from yolotr.checkpoint.weights_file import save_weights

    model = tiny_model()
    path = save_weights(
        tmp_path / "tiny.safetensors",
        model_state=model.state_dict(),
        ema_state=model.state_dict(),
        model_yaml=model.yaml,
        names=TINY_NAMES,
        imgsz=64,
    )
    return path, model


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A tiny synthetic set (9 val images of up to 64 px in 3 shards); returns its data.yaml path."""
    from yolotr.cli import main

    out = tmp_path_factory.mktemp("synth")
    code = main(["data", "synth", "--out", str(out), "--train", "2", "--val", "9", "--classes", "3",
                 "--imgsz", "64", "--samples-per-shard", "4"])
    assert code == 0
    return out / "data.yaml"
