"""What a resumed run may change in its config, and the message that lists what it may not.

A resume continues one training: how long it runs, how it is launched, logged, checkpointed, validated and guarded
may change (a longer schedule, another number of ranks, a new W&B project, a tighter clip); what defines the model,
the data, the optimisation recipe or the augmentations may not, since the checkpoint's weights, optimizer moments
and data position were made under them. Paths may move (the model and the data are checked by content: the
checkpoint's tensors must fit the model, the data stream's fingerprint must match the dataset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Dotted keys, or whole sections ending in ".", that may differ between a checkpoint's config and the resuming run's.
RESUMABLE = (
    "model", "data", "data_cache", "run.dir",
    "train.epochs", "train.max_steps", "train.num_workers", "train.log_every", "train.progress_bar",
    "train.max_data_error_fraction", "train.weight_decay", "train.transformer_lr_mult", "train.weights",
    "checkpoint.", "val.", "wandb.", "log.", "distributed.", "guard.", "faults.", "debug.",
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def config_differences(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """(key, checkpoint's value, this run's value) for every key that differs and may not. Keys that only one side
    has (added or removed between yolotr versions) are not compared."""
    old, new = flatten(saved), flatten(current)
    return [(key, old[key], new[key]) for key in sorted(old.keys() & new.keys())
            if old[key] != new[key] and not _resumable(key)]


def _resumable(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in RESUMABLE)


def describe(differences: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} → {new!r}" for key, old, new in differences)


def saved_config(resume: str) -> Path | None:
    """The config file of the run that `--resume PATH` names (a run folder, or one of its checkpoints/step-N): what
    `yolotr train --resume RUN` without `--config` loads, so that the run continues as it was configured. None when
    PATH is not such a folder (auto, none, a missing path: `choose_run_folder` says what is wrong with it)."""
    target = Path(resume)
    run = target.parent.parent if target.parent.name == "checkpoints" else target
    path = run / "config.yaml"
    return path if path.is_file() else None
