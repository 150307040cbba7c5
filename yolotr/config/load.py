"""Loading the run config: yaml (`safe_load`) plus `key.path=value` overrides, built into the typed tree of
`yolotr.config.run` and validated; any problem raises `ConfigError` naming the key path and the file, before any
process group starts. `yolotr train --print-config` shows the resolved tree.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
from pathlib import Path

import yaml

from yolotr.config.model import TransformerConfig
from yolotr.config.presets import beside, find_file
from yolotr.config.run import Config
from yolotr.config.tree import ConfigError, apply_override, from_dict, to_dict


def _positive(key: str, value: float | int | None, source: str | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'≥' if allow_zero else '>'} 0, got {value}", source)


def _finite(node: object, path: str, source: str | None) -> None:
    """Every number of the tree is finite: yaml reads `.inf` and `.nan` as floats, and no setting means either (an
    infinite lr0 trained to exit 0 with non-finite weights; a NaN one failed deep in the scheduler)."""
    for field in dataclasses.fields(node):
        value, key = getattr(node, field.name), f"{path}.{field.name}" if path else field.name
        if dataclasses.is_dataclass(value):
            _finite(value, key, source)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value}", source)


def validate(cfg: Config, source: str | None = None) -> None:
    """Impossible values, named by their key path. Called before any process group starts."""
    _finite(cfg, "", source)
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
        "train.ema_tau": t.ema_tau,  # the EMA's ramp divides by it
        "distributed.timeout_s": cfg.distributed.timeout_s,
        "run.lock_lease_s": cfg.run.lock_lease_s,
        "checkpoint.writer_timeout_s": cfg.checkpoint.writer_timeout_s,
    }.items():
        _positive(key, value, source)
    _positive("remote.cache_limit_gb", cfg.remote.cache_limit_gb, source, allow_zero=True)
    _positive("remote.retry_budget_s", cfg.remote.retry_budget_s, source, allow_zero=True)
    _positive("remote.timeout_s", cfg.remote.timeout_s, source)
    _positive("remote.prefetch_shards", cfg.remote.prefetch_shards, source, allow_zero=True)
    _positive("train.max_steps", t.max_steps, source)
    _positive("train.num_workers", t.num_workers, source, allow_zero=True)
    _positive("train.prefetch", t.prefetch, source)  # DataLoader's prefetch_factor: at least one batch ahead
    _positive("train.weight_decay", t.weight_decay, source, allow_zero=True)
    _positive("guard.max_norm", cfg.guard.max_norm, source, allow_zero=True)
    _positive("guard.check_every", cfg.guard.check_every, source)
    g, v = cfg.guard, cfg.val
    for key, value in {  # counts and lengths the guard, warmup and validation take as they are (0 is meaningful)
        "train.warmup_epochs": t.warmup_epochs,
        "train.warmup_steps_min": t.warmup_steps_min,
        "guard.spike_min_history": g.spike_min_history,
        "guard.spike_zscore": g.spike_zscore,  # 0 turns the spike check off; a negative one calls every step a spike
        "guard.cooldown_steps": g.cooldown_steps,
        "guard.max_rollbacks": g.max_rollbacks,
        "val.every_epochs": v.every_epochs,
        **{f"loss.{name}": value for name, value in vars(cfg.loss).items()},  # gains and exponents of the loss
    }.items():
        _positive(key, value, source, allow_zero=True)
    for key, value in {
        "guard.spike_window": g.spike_window,
        "guard.rollback_window": g.rollback_window,
        "guard.quarantine_after": g.quarantine_after,
        "val.max_det": v.max_det,
    }.items():
        _positive(key, value, source)
    for key, value in {
        "train.max_data_error_fraction": t.max_data_error_fraction,
        "guard.max_quarantine_fraction": g.max_quarantine_fraction,
        "val.conf_thres": v.conf_thres,
        "val.iou_thres": v.iou_thres,
        "train.warmup_momentum": t.warmup_momentum,
    }.items():
        if not 0 <= value <= 1:
            raise ConfigError(key, f"must be in [0, 1], got {value}", source)
    frozen = cfg.train.freeze if isinstance(cfg.train.freeze, list) else [cfg.train.freeze]
    if any(layer < 0 for layer in frozen):
        raise ConfigError("train.freeze", f"layer numbers must be >= 0, got {cfg.train.freeze}", source)
    if t.imgsz % 32:
        raise ConfigError("train.imgsz", f"must be a multiple of 32 (the largest stride), got {t.imgsz}", source)
    if not 0 < t.lrf <= 1:
        raise ConfigError("train.lrf", f"must be in (0, 1], got {t.lrf}", source)
    if not 0 < t.transformer_lr_mult <= 1:
        raise ConfigError("train.transformer_lr_mult", f"must be in (0, 1], got {t.transformer_lr_mult}", source)
    if not 0 <= t.ema_decay < 1:  # 1 or more never forgets (or grows) the weights it averages
        raise ConfigError("train.ema_decay", f"must be in [0, 1), got {t.ema_decay}", source)
    if not 0 <= t.momentum < 1:
        raise ConfigError("train.momentum", f"must be in [0, 1), got {t.momentum}", source)
    if not 0 < cfg.guard.lr_backoff <= 1:
        raise ConfigError("guard.lr_backoff", f"must be in (0, 1], got {cfg.guard.lr_backoff}", source)
    try:
        TransformerConfig.from_yaml(cfg.transformer.as_yaml())
    except ValueError as error:  # "transformer.<key>: <problem>"
        key, _, problem = str(error).partition(": ")
        raise ConfigError(key, problem, source) from None
    if t.precision == "fp16" and not cfg.guard.enabled:
        raise ConfigError("train.precision", "fp16 needs guard.enabled: the guard's verdict is what skips a step whose "
                          "scaled gradient overflowed (guard/loss_scale.py)", source)
    if t.precision == "fp16" and cfg.distributed.backend == "deepspeed":
        raise ConfigError("train.precision", "fp16 is not supported under DeepSpeed (yolotr runs it with fp32 master "
                          "weights and its own autocast): use bf16 or fp32", source)
    if cfg.debug.anomaly_hooks and cfg.debug.cuda_sync_check:
        raise ConfigError("debug.anomaly_hooks", "reads every module's output on the host, which is exactly what "
                          "debug.cuda_sync_check forbids: turn one of them off", source)
    if not 0 <= cfg.faults.random_nan_rate <= 1:
        raise ConfigError("faults.random_nan_rate", f"must be in [0, 1], got {cfg.faults.random_nan_rate}", source)
    _positive("faults.fill_disk_after_step", cfg.faults.fill_disk_after_step, source)
    _positive("faults.fill_disk_leave_bytes", cfg.faults.fill_disk_leave_bytes, source, allow_zero=True)
    for key in ("nan_loss_at", "nan_grad_at", "nan_forward_at"):
        for i, pair in enumerate(getattr(cfg.faults, key)):
            if len(pair) != 2:
                raise ConfigError(f"faults.{key}[{i}]", f"must be [rank, step], got {pair}", source)
    for i, name in enumerate(cfg.checkpoint.preempt_signals):
        if not hasattr(signal, name):
            raise ConfigError(f"checkpoint.preempt_signals[{i}]", f"unknown signal {name!r}", source)
    for key, path in (("model", cfg.model), ("data", cfg.data), ("train.weights", cfg.train.weights)):
        if path is not None and not Path(path).exists() and not (key == "data" and _is_url(path)):
            raise ConfigError(key, f"file not found: {path}", source)


def load_config(file: str | os.PathLike | None, overrides: list[str] = (), *, check_files: bool = True) -> Config:
    """Reads `file` (yaml, safe_load), applies `key.path=value` overrides, builds and validates the tree."""
    file = find_file(str(file), "train") if file else None
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
        _paths_beside(data, Path(file).parent)
    for override in overrides:
        apply_override(data, override)
    if overrides:
        source = f"{source} + command-line overrides"
    cfg = from_dict(Config, data, source=source)
    cfg.model = find_file(cfg.model, "models")
    if check_files:
        validate(cfg, source)
    else:
        _validate_values_only(cfg, source)
    return cfg


# Keys whose relative paths, written in a config file, mean "beside this file" when something exists there.
PATH_KEYS = ("model", "data", "data_cache", "train.weights", "distributed.deepspeed_config", "remote.cache_dir")


def _is_url(value: str) -> bool:
    """A remote data yaml (s3://, https://...): its scheme is checked, and it is read, by the data package."""
    scheme, sep, _ = value.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.isalnum()


def _paths_beside(data: dict, config_dir: Path) -> None:
    for key in PATH_KEYS:
        *sections, name = key.split(".")
        node = data
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(name), str):
            node[name] = beside(node[name], config_dir)


def _validate_values_only(cfg: Config, source: str) -> None:
    model, data, weights = cfg.model, cfg.data, cfg.train.weights
    cfg.model = cfg.data = __file__  # file existence is checked later, once the data has been made
    cfg.train.weights = None
    try:
        validate(cfg, source)
    finally:
        cfg.model, cfg.data, cfg.train.weights = model, data, weights


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

