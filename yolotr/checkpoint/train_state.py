"""What a training checkpoint holds, and how it goes back into a trainer — on any number of ranks.

Model, EMA and optimizer go through `torch.distributed.checkpoint` (DCP) with fully-qualified parameter names, so the
files do not depend on the world size: under DDP the state is replicated, rank 0 writes it once, and every rank of a
resumed job (1, 2 or 4 of them) reads the whole of it. Counters, the guard's and the stream's state, the config, the
W&B id and the code version go to `trainer.json`; per-rank RNG states to `rank-NNNNN.pt` (tensors only).
Nothing here is unpickled beyond tensors and plain containers: `.pt` files load with `weights_only=True`.
"""

from __future__ import annotations

import functools
import json
import subprocess
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from yolotr import __version__
from yolotr.checkpoint.manager import CheckpointError, write_json_durably
from yolotr.checkpoint.resume_config import config_differences, describe
from yolotr.engine.config_tree import to_dict


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


class CheckpointState:
    """What a checkpoint holds, gathered at a step boundary: (tensors and RNG states as live references, to be
    staged; metadata, JSON-ready). What cannot change during a run is gathered once: the model's and the EMA's state
    dicts (views of storage that training updates in place), the optimizer's name table, the config."""

    def __init__(self, trainer):
        self.t = trainer
        self.model_state = trainer.model.state_dict()
        self.ema_state = trainer.ema.module.state_dict() if trainer.ema is not None else None
        # DeepSpeed writes the optimizer partitions itself (deepspeed_path.save_engine).
        self.optimizer_state = OptimizerStateByName(trainer.model, trainer.optimizer) if trainer.engine is None else None
        self.config = to_dict(trainer.cfg)

    def __call__(self) -> tuple[dict, dict]:
        t = self.t
        tensors = {"model": self.model_state}
        if self.optimizer_state is not None:
            tensors["optimizer"] = self.optimizer_state(t.optimizer)
        if self.ema_state is not None:
            tensors["ema"] = self.ema_state
        meta = {
            "counters": counters(t),
            "guard": t.monitor.state_dict(),
            "stream": t.stream.state_dict(),
            "wandb_run_id": t.io.wandb_run_id,
            "code_version": code_version(),
            "world_size": t.backend.world_size,
            "model_yaml": t.model.yaml,
            "names": list(t.data.names),
            "imgsz": t.cfg.train.imgsz,
            "backend": t.backend.kind,
        }
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        return {"tensors": tensors, "rng": rng}, {**json.loads(json.dumps(meta)), "config": self.config}


def write_rank_files(staged: dict, meta: dict, rank: int, tmp: Path) -> list[Path]:
    """Writes this rank's files of a checkpoint from a staged `CheckpointState()`; returns them (the manager fsyncs
    and hashes them). Runs in the writer process (writer_process.py) or in the manager's writer thread."""
    written = []
    if rank == 0:
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.save(staged["tensors"], checkpoint_id=tmp / "state", no_dist=True)
        written += sorted(p for p in (tmp / "state").rglob("*") if p.is_file())
        write_json_durably(tmp / "trainer.json", meta)
        written.append(tmp / "trainer.json")
    torch.save(staged["rng"], tmp / f"rank-{rank:05d}.pt")
    return [*written, tmp / f"rank-{rank:05d}.pt"]


def load_tensors_only(path: Path):
    """torch.load restricted to tensors and plain containers; anything else is refused, never executed."""
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain containers "
            f"(a crafted or foreign file?): {str(exc).splitlines()[0]}"
        ) from None


def _load_dcp(template: dict, path: Path) -> None:
    """Every rank reads the whole (replicated) state: no collective, any world size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(template, checkpoint_id=path, no_dist=True)


def read_meta(path: Path) -> dict:
    return json.loads((Path(path) / "trainer.json").read_text())


def restore(trainer, path: Path) -> dict:
    """Loads a committed checkpoint into `trainer` (model, EMA, optimizer, counters, guard, stream, RNG).
    Returns trainer.json's content."""
    path = Path(path)
    meta = read_meta(path)
    _refuse_incompatible(trainer, path, meta)
    # The param groups' hyperparameters come back with the optimizer state; the ones the schedule does not set each
    # step (weight decay, the Transformer LR multiplier) are this run's config, as a user changing them expects.
    kept = [{k: g[k] for k in ("weight_decay", "lr_mult") if k in g} for g in trainer.optimizer.param_groups]
    try:
        _load_state(trainer, path)
    except (RuntimeError, ValueError, KeyError, CheckpointException) as exc:  # DCP's derives from BaseException
        detail = next((line for line in str(exc).splitlines() if "mismatch" in line or "Missing key" in line),
                      str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise CheckpointError(f"{path}: does not fit this run's model or optimizer (was the model yaml, nc or "
                              f"train.optimizer changed?): {detail.strip()}") from None
    for group, values in zip(trainer.optimizer.param_groups, kept):
        group.update(values)
    load_counters(trainer, meta["counters"])
    trainer.monitor.load_state_dict(meta["guard"])
    trainer.stream.load_state_dict(meta["stream"])
    if trainer.monitor.quarantine:
        trainer.stream.add_quarantine(sorted(trainer.monitor.quarantine))
    rng_file = path / f"rank-{trainer.backend.rank:05d}.pt"
    if rng_file.is_file():  # a rank that did not exist before starts from its seeded RNG
        rng = load_tensors_only(rng_file)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return meta


def _refuse_incompatible(trainer, path: Path, meta: dict) -> None:
    """What a checkpoint cannot be resumed with, said plainly before any tensor is read."""
    saved = meta.get("config", {})
    old, new = saved.get("train", {}).get("optimizer"), trainer.cfg.train.optimizer
    if old is not None and old != new:
        raise CheckpointError(f"{path}: written with train.optimizer={old}, this run has {new}: resume with {old}, "
                              "or start a new run folder")
    # The other direction (a DeepSpeed run, a checkpoint without) is refused earlier, in deepspeed_path.prepare_engine.
    if meta.get("backend") == "deepspeed" and trainer.engine is None:
        raise CheckpointError(f"{path}: written with DeepSpeed, this run is without: its optimizer state is laid out "
                              "differently; resume with distributed.backend=deepspeed")
    changed = config_differences(saved, to_dict(trainer.cfg))
    if changed:
        raise CheckpointError(f"{path}: this run's config differs from the checkpoint's where a resume cannot change "
                              f"it: {describe(changed)}. Resume with the checkpoint's values, or start a new run "
                              "(checkpoint.resume=none; train.weights=<this checkpoint> starts from its weights)")


def _load_state(trainer, path: Path) -> None:
    if trainer.engine is not None:
        from yolotr.engine.deepspeed_path import load_engine

        template = {"model": trainer.model.state_dict()}
        if trainer.ema is not None:
            template["ema"] = trainer.ema.module.state_dict()
        _load_dcp(template, path / "state")
        load_engine(trainer.engine, path, trainer.universal)  # model + ZeRO partitions, resharded if needed
    else:
        model_sd, optim_sd = get_state_dict(trainer.model, trainer.optimizer)
        template = {"model": model_sd, "optimizer": optim_sd}
        if trainer.ema is not None:
            template["ema"] = trainer.ema.module.state_dict()
        _load_dcp(template, path / "state")
        set_state_dict(
            trainer.model, trainer.optimizer, model_state_dict=template["model"], optim_state_dict=template["optimizer"]
        )
    if trainer.ema is not None:
        trainer.ema.module.load_state_dict(template["ema"])


def counters(t) -> dict:
    """The trainer's own counters, as trainer.json holds them."""
    return {
        "step": t.step,
        "applied_steps": t.applied_steps,
        "epoch": t.epoch,
        "backoff_until": t.backoff_until,
        "skipped_windows": t.skipped_windows,
        "rollbacks": t.rollbacks,
        "best_fitness": t.best_fitness,
        "ema_updates": t.ema.updates if t.ema is not None else 0,
        "val_pending": t.val_pending,
    }


def load_counters(t, c: dict) -> None:
    t.step = int(c["step"])
    t.applied_steps = int(c["applied_steps"])
    t.epoch = int(c["epoch"])
    t.backoff_until = int(c["backoff_until"])
    t.skipped_windows = [list(w) for w in c["skipped_windows"]]
    t.rollbacks = int(c["rollbacks"])
    t.best_fitness = c["best_fitness"]
    t.val_pending = c.get("val_pending")  # absent from checkpoints of earlier versions
    if t.ema is not None:
        t.ema.updates = int(c["ema_updates"])
