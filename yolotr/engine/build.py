"""What a config builds for the trainer, one part per function: the hooks, the AutoAnchor fit, the train stream, the
optimizer and the run's records. `Trainer.__init__` wires them together; the order it builds them in is the part
that is subtle (the EMA before compile, the fault hooks before the step backend), so it stays there.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from yolotr.config import Config
from yolotr.config.tree import to_dict
from yolotr.data.spec import DataSpec
from yolotr.data.split_labels import read_split_labels
from yolotr.data.stream import TrainStream
from yolotr.engine.eval_hook import EvalHook
from yolotr.engine.fast_path import FastPath
from yolotr.engine.hooks import (
    CollectiveCount,
    CompileReport,
    CrashDrill,
    DiskFillDrill,
    HookBase,
    PeriodicCheckpoint,
    PreemptionDrill,
    RankDigests,
    SampleLedger,
    SyncCheck,
)
from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.engine.runtime import Runtime
from yolotr.engine.start_checks import check_batch_fits, check_batch_splits
from yolotr.model.autoanchor import check_anchors, training_box_sizes
from yolotr.model.yolo import DetectionModel
from yolotr.track.loggers import RunLogger


def default_hooks(cfg: Config, runtime: Runtime, fast: FastPath) -> list[HookBase]:
    """The hooks a config asks for, in the order they run: validation before the periodic checkpoint (a validation
    checkpoints its epoch itself, with the fitness), drills last (a crash comes after the step's checkpoint).
    `fast` is the trainer's own fast path: whether it has one decides the compile report."""
    hooks: list[HookBase] = [EvalHook(), PeriodicCheckpoint()]
    if fast.compile or fast.channels_last:
        hooks.append(CompileReport(fast.compile_backend if fast.compile else None))
    if cfg.debug.sample_ledger:
        hooks.append(SampleLedger())
    if cfg.debug.rank_digests:
        hooks.append(RankDigests())
    if cfg.debug.cuda_sync_check:
        hooks.append(SyncCheck())
    if cfg.debug.count_collectives and runtime.kind == "ddp":
        hooks.append(CollectiveCount())
    if cfg.faults.preempt_at_step is not None:
        hooks.append(PreemptionDrill(cfg.faults.preempt_at_step))
    if cfg.faults.exit_at_step is not None:
        hooks.append(CrashDrill(cfg.faults.exit_at_step))
    if cfg.faults.fill_disk_after_step is not None:
        hooks.append(DiskFillDrill(cfg.faults.fill_disk_after_step, cfg.faults.fill_disk_leave_bytes))
    return hooks


def fit_anchors(model: DetectionModel, data: DataSpec, cfg: Config) -> dict:
    """YOLOv5's AutoAnchor, in place on `model`: every rank computes the same anchors from the same labels (no
    collective). Returns the `autoanchor` record."""
    assert data.train is not None  # a training run's data always has its train split
    boxes = [(label.boxes, label.width, label.height) for label in read_split_labels(data.train)]
    wh = training_box_sizes(boxes, cfg.train.imgsz, seed=cfg.run.seed)
    before, after = check_anchors(model.detect, wh, cfg.loss.anchor_t)
    return {"boxes": len(wh), "before": str(before), "after": None if after is None else str(after),
            "replaced": after is not None and after.bpr > before.bpr}


def train_stream(cfg: Config, data: DataSpec, runtime: Runtime) -> TrainStream:
    """This rank's share of the training data, at the position a resume then sets."""
    assert data.train is not None  # a training run's data always has its train split
    # Checked before the start for shards; a YOLO or COCO source has its size only now, once converted.
    check_batch_splits(cfg.train.batch_size, runtime.world_size)
    check_batch_fits(cfg.train.batch_size, data.train.num_samples, data.train.index_file)
    return TrainStream(
        data.train, global_batch_size=cfg.train.batch_size, rank=runtime.rank, world_size=runtime.world_size,
        seed=cfg.run.seed, imgsz=cfg.train.imgsz, augment=cfg.augment, num_workers=cfg.train.num_workers,
        max_error_fraction=cfg.train.max_data_error_fraction,
        pin_memory=runtime.device.type == "cuda",  # so the uint8 host→device copy is asynchronous
        render_device=runtime.device if cfg.train.augment_on == "device" else None, prefetch=cfg.train.prefetch,
    )


def optimizer_for(cfg: Config, model: nn.Module, *, accumulate: int, deepspeed: bool,
                  sync_free_path: bool) -> torch.optim.Optimizer:
    """YOLOv5's three parameter groups (the Transformer's at train.transformer_lr_mult) and its weight decay, scaled
    to the batch that one step really trains.

    On a GPU, fused kernels give the guard its sync-free skip (found_inf); on a CPU the plain kernels are faster and
    the guard reads its verdict directly (guard/step.py), except when debug.cuda_sync_check asks to check the GPU's
    code path on a CPU (`sync_free_path`). Under DeepSpeed, ZeRO owns the step."""
    weight_decay = cfg.train.weight_decay * cfg.train.batch_size * accumulate / cfg.train.nominal_batch_size
    groups = build_param_groups(model, weight_decay, cfg.train.transformer_lr_mult)
    return build_optimizer(groups, cfg.train.optimizer, cfg.train.lr0, cfg.train.momentum,
                           fused=(cfg.guard.enabled and not deepspeed and sync_free_path) or None,
                           preinit_momentum=not deepspeed)


def run_logger(cfg: Config, run_dir: Path, runtime: Runtime) -> RunLogger:
    """metrics.jsonl, and W&B, TensorBoard and results.csv as the config asks (written by rank 0)."""
    return RunLogger(run_dir, is_main=runtime.is_main, wandb_enabled=cfg.wandb.enabled,
                     wandb_project=cfg.wandb.project, wandb_name=cfg.wandb.name, config=to_dict(cfg),
                     tensorboard=cfg.log.tensorboard, results_csv=cfg.log.results_csv)
