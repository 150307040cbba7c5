"""Fixtures for the weights tests: the yolov5-format checkpoints made once with yolov5's own code (fixtures/README.md),
and the engine's tiny training setup."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

# The engine's tiny data, tiny model and config writer (a 1-process run of 8 steps takes a few seconds).
from tests.engine.conftest import tiny_data, tiny_model, train_config  # noqa: F401

FIXTURES = Path(__file__).parent / "fixtures"
V5_FULL = FIXTURES / "tiny-yolov5s-full.pt"
V5_STRIPPED = FIXTURES / "tiny-yolov5s-stripped.pt"
V5_YAML = FIXTURES / "tiny-yolov5s.yaml"
V5_REFERENCE = FIXTURES / "tiny-yolov5s-reference.pt"
YOLOTR_S_PRESET = Path(__file__).resolve().parents[2] / "yolotr/config/presets/models/yolotr-s.yaml"


def yolotr_s_like() -> dict:
    """tiny-yolov5s.yaml turned into yolotr-s the way yolotr-s.yaml differs from yolov5s.yaml: layer 8 is yolotr's
    C3TR, with yolotr-s's `transformer:` switches."""
    cfg = yaml.safe_load(V5_YAML.read_text())
    cfg["backbone"][8][2] = "C3TR"
    cfg["transformer"] = copy.deepcopy(yaml.safe_load(YOLOTR_S_PRESET.read_text())["transformer"])
    return cfg


@pytest.fixture
def yolotr_s_like_yaml(tmp_path) -> Path:
    path = tmp_path / "tiny-yolotr-s.yaml"
    path.write_text(yaml.safe_dump(yolotr_s_like()))
    return path
