"""What a training checkpoint holds, and how it goes back into a run — on any number of ranks.

The checkpointer knows the format, not the trainer: it is handed the run's stateful parts by name, as torchtitan's
`CheckpointManager(states=...)` is, and each part exposes `state_dict()` / `load_state_dict()`:

    "model"         the detector (nn.Module)                 -> state/ (DCP) "model"
    "ema"           guard.ema.ModelEMA, or None              -> state/ "ema" (its module's tensors)
    "step_backend"  the step backend (engine/backends), which -> state/ "optimizer" by parameter name, or its own
                    owns the optimizer (backend_state.py)       files (DeepSpeed's ZeRO partitions, ds/)
    "train_state"   the trainer's counters                   -> trainer.json "counters"
    "guard"         guard.monitor.GuardMonitor               -> trainer.json "guard"
    "stream"        data.stream.TrainStream (data position)  -> trainer.json "stream"
    "wandb_run_id"  track.loggers.RunLogger                  -> trainer.json "wandb_run_id"

Model, EMA and optimizer go through `torch.distributed.checkpoint` with fully-qualified parameter names, so the files
do not depend on the world size: under DDP the state is replicated, rank 0 writes it once, and every rank of a resumed
job (1, 2 or 4 of them) reads the whole of it. Per-rank RNG states go to `rank-NNNNN.pt`. The layout of the files is
in files.py; the commit protocol (atomic, verified, asynchronous) in manager.py.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException

from yolotr import __version__
from yolotr.checkpoint.files import load_tensors, load_tensors_only, read_meta
from yolotr.checkpoint.host_stage import HostStager
from yolotr.checkpoint.manager import CheckpointError, CheckpointManager, CommitStats
from yolotr.checkpoint.resume_config import config_differences
from yolotr.checkpoint.resume_config import describe as describe_differences
from yolotr.checkpoint.writer_process import ThreadWriter, WriterProcess
from yolotr.config import Config
from yolotr.config.tree import to_dict
from yolotr.errors import EXIT_USAGE, UsageError

JSON_STATES = ("train_state", "guard", "stream", "wandb_run_id")
_JSON_KEYS = {"train_state": "counters", "guard": "guard", "stream": "stream", "wandb_run_id": "wandb_run_id"}


class IncompatibleCheckpoint(CheckpointError, UsageError):
    """A sound checkpoint this run cannot continue from (another model, optimizer, backend or recipe). A usage error
    (exit 2), not a runtime failure: a launcher's retry would meet the same checkpoint with the same config."""

    exit_code = EXIT_USAGE


@functools.cache  # once per process: a subprocess per checkpoint would stall the training loop
def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


class OptimizerStateByName:
    """The optimizer's state keyed by parameter name, in the layout of DCP's `get_state_dict` (so `set_state_dict`
    loads it on any number of ranks). DCP recomputes every parameter's name on each call (36 ms for yolotr-n, most of
    an async save's stall); the names never change during a run, so they are computed once here."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        names = {id(p): name for name, p in model.named_parameters()}
        self.names = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]

    def __call__(self, optimizer: torch.optim.Optimizer) -> dict:
        sd = optimizer.state_dict()  # state and param_groups refer to parameters by position
        return {
            "state": {self.names[i]: state for i, state in sd["state"].items()},
            "param_groups": [{**g, "params": [self.names[i] for i in g["params"]]} for g in sd["param_groups"]],
        }


class Checkpointer:
    """Saves a run's states through the commit protocol, and restores them. `describe` is what a checkpoint says
    about the run besides its state (model yaml, class names, image size, world size, backend): read by
    `export-weights` and by the resume checks."""

    def __init__(self, cfg: Config, run_dir: Path, *, rank: int, world_size: int, describe: dict[str, Any],
                 on_commit: Callable[[CommitStats], None] | None = None,
                 fence: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.rank = rank
        # The run's states by name (the table above), handed over by the trainer once its step backend exists: the
        # backend's set-up needs to know the checkpoint it resumes from, which the manager finds.
        self.states: dict[str, Any] = {}
        self.describe = {**describe, "world_size": world_size}
        self.manager = CheckpointManager(run_dir, rank=rank, world_size=world_size,
                                         keep_last=cfg.checkpoint.keep_last,
                                         pause_before_commit_s=cfg.faults.pause_checkpoint_write_s,
                                         pause_from_step=cfg.faults.pause_checkpoint_write_from_step,
                                         on_commit=on_commit, fence=fence)
        # The checkpoint's host copy, reused save after save, in shared memory for the writer process.
        self._stager = HostStager(shared=cfg.checkpoint.writer == "process")
        self._writer = WriterProcess() if cfg.checkpoint.writer == "process" else ThreadWriter()
        self._config = to_dict(cfg)
        self._state_dicts: dict[str, Any] | None = None  # gathered at the first save (see _tensors)
        self.last_saved_step = -1

    # ---- saving ----------------------------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        return step % self.cfg.checkpoint.every == 0

    def already_saved(self, step: int, fitness: float | None = None) -> bool:
        """A second save of the same step without a fitness (the final save right after a periodic one) is not due."""
        return step == self.last_saved_step and fitness is None

    def save(self, step: int, fitness: float | None = None) -> None:
        """Stages the state at this step boundary and writes it in the background (`checkpoint.async_save`)."""
        self.last_saved_step = step
        started = time.perf_counter()
        self.manager.wait()  # the previous save may still read the stager's buffers
        _, plain = self._stager.stage({"tensors": self._tensors(), "rng": _rng_state()})
        # Room for it, where the file system tells: rank 0 writes the state (about the staged bytes, or the last
        # checkpoint's size when DeepSpeed adds its partitions); the other ranks write their RNG state.
        if self.rank == 0:
            staged = sum(b.numel() * b.element_size() for b in self._stager.buffers.values())
            needed = max(staged, self.manager.size_of_newest())
        else:
            needed = 1 << 20
        self.manager.check_room(needed)
        meta = self._meta()
        backend = self.states["step_backend"]
        self.manager.save(
            step,
            write_sync=backend.write_checkpoint_files,  # every rank, now: e.g. DeepSpeed's own collective save
            write_rank_files=lambda tmp: self._writer.write(self._stager, plain, meta, self.rank, tmp),
            asynchronous=self.cfg.checkpoint.async_save,
            fitness=fitness,
            started=started,
        )

    def _tensors(self) -> dict:
        """Model, EMA and optimizer state as live references, to be staged. The model's and the EMA's state dicts are
        views of storage that training updates in place, so they are gathered once (after the step backend's set-up,
        which may re-point the parameters: hence at the first save, not in __init__)."""
        if self._state_dicts is None:
            ema = self.states["ema"]
            self._state_dicts = {"model": self.states["model"].state_dict()}
            if ema is not None:
                self._state_dicts["ema"] = ema.module.state_dict()
        tensors = {"model": self._state_dicts["model"]}
        optimizer = self.states["step_backend"].checkpoint_optimizer_state()
        if optimizer is not None:
            tensors["optimizer"] = optimizer
        if "ema" in self._state_dicts:
            tensors["ema"] = self._state_dicts["ema"]
        return tensors

    def _meta(self) -> dict:
        meta = {_JSON_KEYS[name]: self.states[name].state_dict() for name in JSON_STATES}
        meta.update(self.describe, code_version=code_version())
        return {**json.loads(json.dumps(meta)), "config": self._config}

    def poll(self) -> None:
        """At a step boundary: commits a pending save once every rank has written it."""
        self.manager.poll()

    def close(self) -> None:
        """Before exit: the pending save written, committed and on disk; the writer process stopped."""
        try:
            self.manager.close()
        finally:
            self._writer.close()

    # ---- restoring -------------------------------------------------------------------------------------------------
    def restore(self, path: Path) -> dict:
        """Loads a committed checkpoint into the states (and this rank's RNG). Returns trainer.json's content."""
        path = Path(path)
        meta = read_meta(path)
        self._refuse_incompatible(path, meta)
        backend, model, ema = self.states["step_backend"], self.states["model"], self.states["ema"]
        # The param groups' hyperparameters come back with the optimizer state; the ones the schedule does not set
        # each step (weight decay, the Transformer LR multiplier) are this run's config, as a user changing them expects.
        kept = [{k: g[k] for k in ("weight_decay", "lr_mult") if k in g} for g in backend.optimizer.param_groups]
        template = {"model": model.state_dict()}
        optimizer = backend.optimizer_load_template()
        if optimizer is not None:
            template["optimizer"] = optimizer
        if ema is not None:
            template["ema"] = ema.module.state_dict()
        try:
            load_tensors(template, path)
            backend.load_checkpoint(path, template)
        except (RuntimeError, ValueError, KeyError, CheckpointException) as exc:  # DCP's derives from BaseException
            detail = next((line for line in str(exc).splitlines() if "mismatch" in line or "Missing key" in line),
                          str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise IncompatibleCheckpoint(f"{path}: does not fit this run's model or optimizer (was the model yaml, nc "
                                         f"or train.optimizer changed?): {detail.strip()}") from None
        for group, values in zip(backend.optimizer.param_groups, kept):
            group.update(values)
        if ema is not None:
            ema.module.load_state_dict(template["ema"])
        for name in JSON_STATES:
            self.states[name].load_state_dict(meta[_JSON_KEYS[name]])
        rng_file = path / f"rank-{self.rank:05d}.pt"
        if rng_file.is_file():  # a rank that did not exist before starts from its seeded RNG
            rng = load_tensors_only(rng_file)
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        return meta

    def _refuse_incompatible(self, path: Path, meta: dict) -> None:
        """What a checkpoint cannot be resumed with, said plainly before any tensor is read."""
        saved = meta.get("config", {})
        old, new = saved.get("train", {}).get("optimizer"), self.cfg.train.optimizer
        if old is not None and old != new:
            raise IncompatibleCheckpoint(f"{path}: written with train.optimizer={old}, this run has {new}: resume "
                                         f"with {old}, or start a new run folder")
        # The other direction (a DeepSpeed run, a checkpoint without) is refused by the DeepSpeed backend's set-up.
        if meta.get("backend") == "deepspeed" and self.states["step_backend"].kind != "deepspeed":
            raise IncompatibleCheckpoint(f"{path}: written with DeepSpeed, this run is without: its optimizer state "
                                         "is laid out differently; resume with distributed.backend=deepspeed")
        changed = config_differences(saved, self._config)
        if changed:
            raise IncompatibleCheckpoint(f"{path}: this run's config differs from the checkpoint's where a resume "
                                         f"cannot change it: {describe_differences(changed)}. Resume with the "
                                         "checkpoint's values, or start a new run (checkpoint.resume=none; "
                                         "train.weights=<this checkpoint> starts from its weights)")


def _rng_state() -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng
