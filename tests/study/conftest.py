"""Shared pieces of the stability-study tests: a tiny study file on the real naive base config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_repo(monkeypatch) -> Path:
    """Model and base-config paths in the study files are relative to the repository root, as in the README."""
    monkeypatch.chdir(REPO)
    return REPO


def write_study(path: Path, cells: list[dict], *, steps: int = 30, stress: float = 10.0, batch_size: int = 8,
                bundles: dict | None = None) -> Path:
    """A study file with the shipped base config and bundles, and a small profile for both quick and full."""
    shipped = yaml.safe_load((REPO / "configs/study/stability.yaml").read_text())
    profile = {"steps": steps, "imgsz": 64, "batch_size": batch_size, "train_images": 64, "val_images": 8,
               "timeout_s": 300}
    study = {
        "base": "configs/study/naive.yaml",
        "learning_rates": {"default": 0.04, "stress": stress},
        "profiles": {"quick": profile, "full": profile},
        "bundles": bundles if bundles is not None else shipped["bundles"],
        "cells": cells,
    }
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path
