"""yolotr's one typed config tree: every knob of a training run, loaded from yaml with `safe_load`.

`load_config(file, overrides)` merges `key.path=value` overrides (YAML values) into the file's data, builds the
dataclass tree, and validates it; any problem raises `ConfigError` naming the key path and the file, before any
process group starts. `yolotr train --print-config` shows the resolved tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from yolotr.data.augment import AugmentConfig
from yolotr.engine.config_tree import ConfigError, apply_override, from_dict, to_dict
from yolotr.model.loss import LossHyp


@dataclass
class RunConfig:
    dir: str = "runs/exp"
    """Run folder: resolved config, metrics.jsonl, checkpoints, plots, W&B files. Relative to the working directory."""
    seed: int = 0
    """Seed of the model init, the data order and the augmentations."""


@dataclass
class TrainConfig:
    epochs: int = 100
    """Epochs to train (an epoch is one pass over the train shards at the global batch size)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps, skipped steps included. None: epochs × steps per epoch."""
    batch_size: int = 64
    """Global batch size (all ranks together, per optimizer micro-step). Must divide by the number of ranks."""
    nominal_batch_size: int = 64
    """Gradients are accumulated until this many images before an optimizer step (YOLOv5's `nbs`)."""
    imgsz: int = 640
    """Square training image size in pixels (multiple of 32)."""
    num_workers: int = 2
    """DataLoader workers per rank."""
    max_data_error_fraction: float = 0.01
    """Corrupt samples (skipped, counted, logged with key and reason) beyond this fraction stop the run (exit 4)."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """SGD with Nesterov momentum (YOLOv5's default) or AdamW."""
    lr0: float = 0.01
    """Initial learning rate of the CNN parameters (SGD 0.01, AdamW 0.001 in YOLOv5)."""
    lrf: float = 0.01
    """Final learning rate as a fraction of lr0 (the decay's target, reached after the last epoch)."""
    momentum: float = 0.937
    """SGD momentum / Adam beta1."""
    weight_decay: float = 0.0005
    """Weight decay of conv and linear weights (scaled by batch_size × accumulate / nbs as in YOLOv5). Never on norms or biases."""
    transformer_lr_mult: float = 0.2
    """Learning-rate multiplier of Transformer-block parameters (attention wants 1/5–1/10 of the CNN's LR)."""
    warmup_epochs: float = 3.0
    """Warmup length in epochs (at least `warmup_steps_min` batches, as YOLOv5). Meanwhile the batches accumulated per
    optimizer step ramp from 1 to nominal_batch_size / batch_size, as in YOLOv5 (not under DeepSpeed)."""
    warmup_steps_min: int = 100
    """Lower bound of the warmup length in batches of `batch_size` (YOLOv5's 100 iterations; with no accumulation a
    batch is an optimizer step)."""
    warmup_momentum: float = 0.8
    """Momentum at the start of the warmup."""
    warmup_bias_lr: float = 0.1
    """Bias learning rate at the start of the warmup (falls to the scheduled LR)."""
    cos_lr: bool = True
    """Cosine decay from lr0 to lr0·lrf; false: linear decay (YOLOv5's default)."""
    lr_step: Literal["epoch", "step"] = "epoch"
    """When the decay moves: once per epoch, as YOLOv5's LambdaLR (the last epoch trains at the LR of epochs − 1), or
    at every optimizer step."""
    autoanchor: bool = True
    """Before training, check the model's anchors against the train boxes and, when fewer than 98 % of them can be
    matched (loss.anchor_t), fit new ones (YOLOv5's AutoAnchor; yolotr/model/autoanchor.py). Saved with the weights."""
    precision: Literal["bf16", "fp32"] = "bf16"
    """Autocast dtype of the forward pass. The loss is always fp32 and master weights are always fp32."""
    ema: bool = True
    """Keep an exponential moving average of the weights (fp32), validated and exported."""
    ema_decay: float = 0.9999
    """EMA decay, ramped as decay·(1 − exp(−updates/ema_tau)) like YOLOv5."""
    ema_tau: float = 2000.0
    """EMA ramp constant in updates."""
    log_every: int = 10
    """Write a train record (and read device-side counters on GPU) every this many optimizer steps."""
    progress_bar: bool = True
    """Rank-0 progress bar on the console."""


@dataclass
class GuardConfig:
    enabled: bool = True
    """Skip non-finite steps and roll back on repeated trouble. Off only for the stability study's baselines."""
    max_norm: float = 1.0
    """Clip on the global norm of the gradient of the per-image mean loss, the same at any batch size, number of ranks
    or accumulation (docs/stability.md). YOLOv5's clip_grad_norm_(10) on its batch-summed loss at its nominal batch
    of 64 is 10 / 64 = 0.16 in these units. 0 disables clipping (not the skip)."""
    max_consecutive_skips: int = 3
    """After this many consecutive skipped steps the run rolls back to the last good snapshot."""
    spike_zscore: float = 6.0
    """A loss this many standard deviations above the recent window counts as a spike and rolls back. 0 disables."""
    spike_window: int = 100
    """Number of recent finite losses the spike z-score is computed over."""
    spike_min_history: int = 20
    """No spike detection before this many finite losses were seen in the window."""
    snapshot_every: int = 50
    """Take a host-memory snapshot of the training state every this many steps (only when the steps since were good)."""
    lr_backoff: float = 0.5
    """After a rollback the learning rate is multiplied by this factor for `cooldown_steps`."""
    cooldown_steps: int = 100
    """Length of the LR back-off after a rollback, in optimizer steps."""
    max_rollbacks: int = 3
    """At most this many rollbacks within `rollback_window` steps; trouble after them stops the run (exit code 3)."""
    rollback_window: int = 1000
    """Window, in steps, over which rollbacks are counted."""
    quarantine_after: int = 2
    """A sample key implicated in this many bad steps is quarantined: the stream skips it from then on."""
    max_quarantine_fraction: float = 0.01
    """At most this fraction of the train samples is ever quarantined; beyond it the cause is not the data."""
    check_every: int | None = None
    """Read the guard's device-side verdicts on the host every this many steps. None: 1 on CPU, log_every on GPU
    (and with debug.cuda_sync_check)."""


@dataclass
class CheckpointConfig:
    every: int = 500
    """Save a checkpoint every this many optimizer steps (and at the end, on preemption and after validation)."""
    keep_last: int = 3
    """How many of the newest checkpoints to keep (the best by fitness is kept in addition)."""
    async_save: bool = True
    """Copy state to host memory at the step boundary and write it in the background."""
    writer: Literal["process", "thread"] = "process"
    """Who serialises the files: a writer process per rank (the GIL-bound serialisation stays out of the training
    loop; needs shared memory, e.g. `docker run --shm-size`), or the background thread of the trainer itself."""
    resume: str = "auto"
    """auto: newest valid checkpoint of the run folder, fresh start when none; none: always fresh; or a path."""
    preempt_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    """Signals that request checkpoint-and-exit (exit code 75), agreed across ranks at the next step."""


@dataclass
class ValConfig:
    every_epochs: int = 1
    """Validate the EMA weights every this many epochs (and at the end). 0: only at the end."""
    batch_size: int = 32
    """Validation batch size per rank."""
    conf_thres: float = 0.001
    """Confidence threshold for mAP (YOLOv5's val uses 0.001)."""
    iou_thres: float = 0.6
    """NMS IoU threshold for mAP."""
    max_det: int = 300
    """Detections kept per image."""


@dataclass
class WandbConfig:
    enabled: bool = True
    """Log to Weights & Biases from rank 0 (offline when no API key is configured; WANDB_MODE=disabled respected)."""
    project: str = "yolotr"
    """W&B project name."""
    name: str | None = None
    """W&B run name (default: the run folder's name)."""


@dataclass
class DistributedConfig:
    backend: Literal["auto", "ddp", "deepspeed"] = "auto"
    """auto: DeepSpeed when launched with `accelerate launch --use_deepspeed`, else DDP (or one process)."""
    deepspeed_config: str | None = None
    """DeepSpeed json (configs/deepspeed/zero2.json …) when backend is deepspeed and accelerate did not supply one."""
    timeout_s: int = 600
    """Process-group timeout in seconds."""


@dataclass
class FaultsConfig:
    nan_loss_at: list[list[int]] = field(default_factory=list)
    """[[rank, step], ...]: that rank's loss becomes NaN at that step (fault drills and tests)."""
    nan_grad_at: list[list[int]] = field(default_factory=list)
    """[[rank, step], ...]: that rank's local gradient gets a NaN at that step, before the all-reduce."""
    nan_forward_at: list[list[int]] = field(default_factory=list)
    """[[rank, step], ...]: the first Transformer block's output becomes NaN on that rank at that step."""
    random_nan_rate: float = 0.0
    """Probability per (step, rank) of a NaN loss, drawn from `random_seed` (the stability study's injection)."""
    random_seed: int = 1234
    """Seed of the random NaN injection, independent of the run seed."""
    skip_steps: list[int] = field(default_factory=list)
    """Steps to skip as if they were non-finite, without any NaN (the reference run of the skip tests)."""
    exit_at_step: int | None = None
    """Exit abruptly (os._exit(1), like a crash) after this step: crash-resume drills."""
    preempt_at_step: int | None = None
    """Act as if a preemption notice arrived during this step: checkpoint after it and exit 75 (drills)."""
    pause_checkpoint_write_s: float = 0.0
    """Sleep this long inside the checkpoint writer before committing (to test a kill during a save)."""


@dataclass
class DebugConfig:
    sample_ledger: bool = False
    """Every rank appends the sample keys it trained on to ledger.jsonl (epoch, step, rank, key)."""
    rank_digests: bool = False
    """Every rank appends sha256 digests of its parameters, buffers and optimizer state to digests.jsonl."""
    anomaly_hooks: bool = False
    """On a bad step, name the first module whose output was non-finite (forward hooks; costs a sync per module)."""
    cuda_sync_check: bool = False
    """Every step outside inspection steps must not make the host wait for the device: on a GPU it runs under
    torch.cuda.set_sync_debug_mode("error"), on a CPU under a dispatch mode that raises on the same ops."""
    count_collectives: bool = False
    """Count the collectives issued per step with the profiler and log them as events (tests)."""


@dataclass
class Config:
    model: str = "configs/models/yolotr-n.yaml"
    """Model yaml in YOLOv5's format."""
    data: str = "datasets/synth/data.yaml"
    """Data yaml (shards + index), written by `yolotr data synth` or `yolotr data shard`."""
    run: RunConfig = field(default_factory=RunConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossHyp = field(default_factory=LossHyp)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    val: ValConfig = field(default_factory=ValConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    transformer: dict = field(default_factory=dict)
    """Overrides of the model yaml's `transformer:` switches (qk_norm, layer_scale, xavier_init) for every C3TR."""


def _positive(key: str, value: float | int | None, source: str | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'≥' if allow_zero else '>'} 0, got {value}", source)


def validate(cfg: Config, source: str | None = None) -> None:
    """Impossible values, named by their key path. Called before any process group starts."""
    t = cfg.train
    for key, value in {
        "train.epochs": t.epochs,
        "train.batch_size": t.batch_size,
        "train.nominal_batch_size": t.nominal_batch_size,
        "train.imgsz": t.imgsz,
        "train.lr0": t.lr0,
        "train.log_every": t.log_every,
        "checkpoint.every": cfg.checkpoint.every,
        "checkpoint.keep_last": cfg.checkpoint.keep_last,
        "val.batch_size": cfg.val.batch_size,
        "guard.max_consecutive_skips": cfg.guard.max_consecutive_skips,
        "guard.snapshot_every": cfg.guard.snapshot_every,
    }.items():
        _positive(key, value, source)
    _positive("train.max_steps", t.max_steps, source)
    _positive("train.num_workers", t.num_workers, source, allow_zero=True)
    _positive("train.weight_decay", t.weight_decay, source, allow_zero=True)
    _positive("guard.max_norm", cfg.guard.max_norm, source, allow_zero=True)
    _positive("guard.check_every", cfg.guard.check_every, source)
    if t.imgsz % 32:
        raise ConfigError("train.imgsz", f"must be a multiple of 32 (the largest stride), got {t.imgsz}", source)
    if not 0 < t.lrf <= 1:
        raise ConfigError("train.lrf", f"must be in (0, 1], got {t.lrf}", source)
    if not 0 < t.transformer_lr_mult <= 1:
        raise ConfigError("train.transformer_lr_mult", f"must be in (0, 1], got {t.transformer_lr_mult}", source)
    if not 0 <= t.momentum < 1:
        raise ConfigError("train.momentum", f"must be in [0, 1), got {t.momentum}", source)
    if not 0 < cfg.guard.lr_backoff <= 1:
        raise ConfigError("guard.lr_backoff", f"must be in (0, 1], got {cfg.guard.lr_backoff}", source)
    if cfg.debug.anomaly_hooks and cfg.debug.cuda_sync_check:
        raise ConfigError("debug.anomaly_hooks", "reads every module's output on the host, which is exactly what "
                          "debug.cuda_sync_check forbids: turn one of them off", source)
    if not 0 <= cfg.faults.random_nan_rate <= 1:
        raise ConfigError("faults.random_nan_rate", f"must be in [0, 1], got {cfg.faults.random_nan_rate}", source)
    for key in ("nan_loss_at", "nan_grad_at", "nan_forward_at"):
        for i, pair in enumerate(getattr(cfg.faults, key)):
            if len(pair) != 2:
                raise ConfigError(f"faults.{key}[{i}]", f"must be [rank, step], got {pair}", source)
    import signal

    for i, name in enumerate(cfg.checkpoint.preempt_signals):
        if not hasattr(signal, name):
            raise ConfigError(f"checkpoint.preempt_signals[{i}]", f"unknown signal {name!r}", source)
    for key in ("model", "data"):
        path = getattr(cfg, key)
        if not Path(path).is_file():
            raise ConfigError(key, f"file not found: {path}", source)


def load_config(file: str | os.PathLike | None, overrides: list[str] = (), *, check_files: bool = True) -> Config:
    """Reads `file` (yaml, safe_load), applies `key.path=value` overrides, builds and validates the tree."""
    source = str(file) if file else "defaults"
    data: dict = {}
    if file:
        try:
            text = Path(file).read_text()
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {file}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError("<root>", f"not valid YAML: {exc}", source) from None
        if not isinstance(data, dict):
            raise ConfigError("<root>", "the config file must hold a mapping", source)
    for override in overrides:
        apply_override(data, override)
    if overrides:
        source = f"{source} + command-line overrides"
    cfg = from_dict(Config, data, source=source)
    if check_files:
        validate(cfg, source)
    else:
        _validate_values_only(cfg, source)
    return cfg


def _validate_values_only(cfg: Config, source: str) -> None:
    model, data = cfg.model, cfg.data
    cfg.model = cfg.data = __file__  # file existence is checked later, once the data has been made
    try:
        validate(cfg, source)
    finally:
        cfg.model, cfg.data = model, data


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = ["Config", "ConfigError", "load_config", "dump_config", "validate"]
