"""What the checkpointer needs of the step backend: the optimizer's part of a checkpoint.

The step backend (engine/backends) owns the optimizer and knows how its state is laid out: replicated and saved by
parameter name through DCP (one process, DDP), or partitioned and saved by DeepSpeed itself (ZeRO). The checkpointer
sits below the engine, so it names this contract here instead of importing the backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch


class CheckpointedBackend(Protocol):
    kind: str
    """"single", "ddp" or "deepspeed": a checkpoint written under DeepSpeed only resumes under DeepSpeed."""
    optimizer: torch.optim.Optimizer

    def checkpoint_optimizer_state(self) -> dict | None:
        """The optimizer state for DCP, by parameter name; None when the backend writes its own files."""

    def write_checkpoint_files(self, tmp: Path) -> None:
        """Every rank, at the save: the backend's own files into the checkpoint being written (DeepSpeed's ZeRO
        partitions), or nothing."""

    def optimizer_load_template(self) -> dict | None:
        """What DCP loads the optimizer state into; None when the backend reads its own files."""

    def load_checkpoint(self, path: Path, loaded: dict) -> None:
        """Puts the loaded state (model, and optimizer when DCP read it) into the live objects."""
