"""ultralytics' names for training settings (`yolo train epochs=3 imgsz=640 batch=64`), and the yolotr key each one
means: the one table that `yolotr train name=value` and `YOLO(...).train(name=value)` both read, and that
`yolotr train --help` prints.

A name maps only where yolotr has the same setting (`batch` is the global batch in both). A name ultralytics has and
yolotr does not (yet) is refused with a line saying so, never read as an unknown key; `device` is not a config key
but where the ranks run, and so is yolotr's `nproc`: the command line and the API take them out before the config is
read (engine/device_choice.py).
Besides these, a setting may be named by its key path (`train.lr0`) or by its field name alone (`batch_size`,
`max_norm`: the section's field of that name, `train` first when several sections have one).
"""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from yolotr.config.run import Config, RunConfig
from yolotr.config.tree import ConfigError

SOURCE = "command line"


def _same(value: Any) -> Any:
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value  # ultralytics spells them SGD, AdamW


def _precision_of_amp(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return "bf16" if value else "fp32"


def _resume_of(value: Any) -> Any:
    if isinstance(value, bool):
        return "auto" if value else "none"
    return value


def _weights_of_pretrained(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("takes a weights file here (pretrained=yolov5s.pt); a model given as weights "
                         "(model=yolov5s.pt) starts from its own weights already")
    return value


@dataclass(frozen=True)
class Alias:
    key: str
    """The yolotr key path the name sets."""
    convert: Callable[[Any], Any] = _same
    """ultralytics' value -> yolotr's (raises ValueError with the problem)."""
    note: str = ""
    """Where the meaning differs in a detail, for the help."""


ALIASES: dict[str, Alias] = {
    "epochs": Alias("train.epochs"),
    "imgsz": Alias("train.imgsz"),
    "batch": Alias("train.batch_size", note="the global batch, all ranks together"),
    "workers": Alias("train.num_workers", note="per rank"),
    "optimizer": Alias("train.optimizer", _lower, "SGD or AdamW"),
    "lr0": Alias("train.lr0"),
    "lrf": Alias("train.lrf"),
    "momentum": Alias("train.momentum"),
    "weight_decay": Alias("train.weight_decay"),
    "warmup_epochs": Alias("train.warmup_epochs"),
    "warmup_momentum": Alias("train.warmup_momentum"),
    "warmup_bias_lr": Alias("train.warmup_bias_lr"),
    "cos_lr": Alias("train.cos_lr"),
    "nbs": Alias("train.nominal_batch_size"),
    "freeze": Alias("train.freeze"),
    "amp": Alias("train.precision", _precision_of_amp, "true: bf16 autocast, false: fp32"),
    "pretrained": Alias("train.weights", _weights_of_pretrained, "a weights file"),
    "seed": Alias("run.seed"),
    "resume": Alias("checkpoint.resume", _resume_of, "true: auto, or a run folder or checkpoint"),
    "project": Alias("run.dir", note="run.dir is project/name, default runs/exp"),
    "name": Alias("run.dir", note="run.dir is project/name, default runs/exp"),
    "hsv_h": Alias("augment.hsv_h"),
    "hsv_s": Alias("augment.hsv_s"),
    "hsv_v": Alias("augment.hsv_v"),
    "degrees": Alias("augment.degrees"),
    "translate": Alias("augment.translate"),
    "scale": Alias("augment.scale"),
    "shear": Alias("augment.shear"),
    "fliplr": Alias("augment.fliplr"),
    "mosaic": Alias("augment.mosaic"),
    "label_smoothing": Alias("loss.label_smoothing"),
    "conf": Alias("val.conf_thres", note="of the validations during training"),
    "iou": Alias("val.iou_thres", note="of the validations during training"),
    "max_det": Alias("val.max_det"),
}

# ultralytics' training names with no yolotr equivalent yet, and what to do instead where something comes close.
NOT_SUPPORTED: dict[str, str] = {
    "patience": "training runs all its epochs (no early stop); the best weights are kept in weights/best.safetensors",
    "save_period": "checkpoints are taken every checkpoint.every optimizer steps, not epochs",
    "val": "validation runs every val.every_epochs epochs (0: only at the end)",
    "box": "the loss gains are YOLOv5's, on another scale than ultralytics' v8 loss: set loss.box",
    "cls": "the loss gains are YOLOv5's, on another scale than ultralytics' v8 loss: set loss.cls",
    "dfl": "the YOLOv5 loss has no distribution focal loss",
    "verbose": "use --verbose or --quiet",
    **{name: "" for name in (
        "time", "cache", "exist_ok", "deterministic", "single_cls", "rect", "close_mosaic", "fraction", "profile",
        "multi_scale", "dropout", "plots", "save", "perspective", "flipud", "bgr", "mixup", "copy_paste",
        "copy_paste_mode", "auto_augment", "erasing", "crop_fraction", "overlap_mask", "mask_ratio", "pose", "kobj",
        "half", "dnn", "split")},
}

LAUNCH_NAMES = ("device", "nproc")
"""Names that say where the ranks run rather than how they train: taken out before the config is read."""

# The settings a YOLOv5 user sets first, for the help.
COMMON_KEYS = ("model", "data", "train.epochs", "train.imgsz", "train.batch_size", "train.num_workers",
               "train.optimizer", "train.lr0", "train.weights", "run.dir", "run.seed", "checkpoint.resume",
               "val.every_epochs", "wandb.enabled")


TOP_LEVEL_KEYS = tuple(f.name for f in dataclasses.fields(Config))


def resolve_name(name: str, source: str = SOURCE) -> str:
    """The key path `name` means: a key path as is, an ultralytics name's key, or the field of that name (in
    `train` when several sections have one). A name found nowhere is returned as is: loading it then fails with
    the tree's own "unknown key; did you mean" error."""
    if "." in name or name in TOP_LEVEL_KEYS:
        return name
    if name in ALIASES:
        return ALIASES[name].key
    if name in NOT_SUPPORTED:
        reason = NOT_SUPPORTED[name]
        raise ConfigError(name, f"ultralytics' '{name}' is not supported yet{': ' + reason if reason else ''}", source)
    matches = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        if dataclasses.is_dataclass(hints[section.name]):
            matches += [f"{section.name}.{f.name}" for f in dataclasses.fields(hints[section.name]) if f.name == name]
    if f"train.{name}" in matches:
        return f"train.{name}"
    if len(matches) > 1:
        raise ConfigError(name, f"is ambiguous ({', '.join(matches)}): give the key path, e.g. {matches[0]}=...",
                          source)
    return matches[0] if matches else name


def to_key_paths(settings: Iterable[tuple[str, Any]], source: str = SOURCE) -> dict[str, Any]:
    """(name, value) pairs -> {key path: value}, each value converted as its alias says. Refuses an ultralytics
    name given together with the key it stands for (`batch=8 train.batch_size=16`), naming both, and joins
    `project` and `name` into run.dir."""
    resolved: dict[str, Any] = {}
    named_by: dict[str, str] = {}
    run_dir: dict[str, Any] = {}
    for name, value in settings:
        key = resolve_name(name, source)
        if name in ("project", "name"):
            run_dir[name] = value
        elif key in named_by and named_by[key] != name:
            raise ConfigError(name, f"sets {key}, which {named_by[key]} sets too: give one of them", source)
        else:
            alias = ALIASES.get(name)
            try:
                resolved[key] = alias.convert(value) if alias else value
            except ValueError as error:
                raise ConfigError(name, str(error), source) from None
        named_by.setdefault(key, name)
    if run_dir:
        if "run.dir" in resolved:
            raise ConfigError("run.dir", f"is set together with {' and '.join(run_dir)}: give one of them", source)
        default_project, _, default_name = RunConfig.dir.rpartition("/")
        resolved["run.dir"] = f"{run_dir.get('project', default_project)}/{run_dir.get('name', default_name)}"
    return resolved


def split_override(override: str) -> tuple[str, str]:
    if "=" not in override:
        raise ConfigError(override, "an override must look like key.path=value", SOURCE)
    name, raw = override.split("=", 1)
    return name.strip(), raw


def launch_settings(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    """The launch names among `key=value` overrides (`device=0,1`), and the other overrides."""
    launch, rest = {}, []
    for override in overrides:
        name, raw = split_override(override) if "=" in override else (override, "")
        if name in LAUNCH_NAMES:
            launch[name] = raw
        else:
            rest.append(override)
    return launch, rest


def translate_overrides(overrides: list[str]) -> list[str]:
    """`name=value` overrides of the command line as `key.path=value`, through `to_key_paths`. Values keep their
    YAML text unless an alias converts them."""
    import json

    import yaml

    pairs, raws = [], {}
    for override in overrides:
        name, raw = split_override(override)
        convert = name in ALIASES and ALIASES[name].convert is not _same
        try:
            value = yaml.safe_load(raw) if convert else raw
        except yaml.YAMLError as exc:
            raise ConfigError(name, f"value {raw!r} is not valid YAML: {exc}", SOURCE) from None
        pairs.append((name, value))
        raws[resolve_name(name)] = convert
    translated = []
    for key, value in to_key_paths(pairs).items():
        text = json.dumps(value) if raws.get(key, True) else value
        translated.append(f"{key}={text}")
    return translated


def help_table() -> str:
    """The alias table and the common keys, as `yolotr train --help` prints them."""
    lines = ["common keys (key=value, values as YAML; every key: docs/config.md):",
             *textwrap.wrap(" ".join(COMMON_KEYS), 100, initial_indent="  ", subsequent_indent="  "), "",
             "ultralytics' names (yolo train ...) and the key each sets:"]
    width = max(map(len, ALIASES))
    for name, alias in ALIASES.items():
        lines.append(f"  {name:<{width}}  {alias.key}{'  (' + alias.note + ')' if alias.note else ''}")
    lines.append(f"  {'device':<{width}}  cpu, 0, or 0,1: one rank per GPU, started by yolotr train itself")
    lines.append(f"  {'nproc':<{width}}  ranks to start on this machine (nproc=2 device=cpu: two CPU ranks, gloo)")
    lines += ["", *textwrap.wrap("not supported yet: " + " ".join(sorted(NOT_SUPPORTED)), 100, subsequent_indent="  ")]
    return "\n".join(lines)


__all__ = ["TOP_LEVEL_KEYS", "ALIASES", "NOT_SUPPORTED", "COMMON_KEYS", "Alias", "resolve_name", "to_key_paths",
           "translate_overrides", "launch_settings", "help_table"]
