"""Fixtures for the model tests: the shipped model yamls, and small models built from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

_MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"


@pytest.fixture
def model_yaml() -> Callable[[str], dict]:
    """Returns load(name): a shipped model yaml (e.g. 'yolotr-n') as a fresh dict."""
    return lambda name: yaml.safe_load((_MODEL_CONFIGS / f"{name}.yaml").read_text())


@pytest.fixture
def tiny_model_cfg(model_yaml) -> Callable[..., dict]:
    """Returns make(base='yolotr-n', width=0.125, nc=80, block=None): a shipped layout at a fraction of its width,
    with the last backbone block optionally swapped ('C3', 'C3TR' or 'C3TRv5'). Tiny enough for CPU tests."""

    def make(base: str = "yolotr-n", width: float = 0.125, nc: int = 80, block: str | None = None) -> dict:
        cfg = model_yaml(base)
        cfg["width_multiple"], cfg["nc"] = width, nc
        if block is not None:
            cfg["backbone"][8][2] = block
        return cfg

    return make
