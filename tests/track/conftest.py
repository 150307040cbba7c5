"""Fixtures for tracking tests: an isolated offline W&B environment."""

from __future__ import annotations

import pytest


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B in offline mode with every directory it writes under tmp_path; the wandb service is torn down after."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home" / variable.lower()))
    yield tmp_path
    import wandb

    wandb.teardown()
