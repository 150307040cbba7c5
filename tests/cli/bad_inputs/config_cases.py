"""Bad configs: keys, types, choices, files and overrides `yolotr train` refuses before anything is made."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.cli.bad_inputs.common import NO_RUN, BadInput, Prepared, World, refused_train



def _config_file(text: str) -> Callable[[World, Path], Prepared]:
    def prepare(world: World, here: Path) -> Prepared:
        path = here / "bad.yaml"
        path.write_text(text)
        return Prepared(["train", "--config", str(path)], absent=[here / "run"])

    return prepare


def _overrides(*overrides: str) -> Callable[[World, Path], Prepared]:
    return lambda world, here: refused_train(world, here, *overrides)


CONFIG = [
    BadInput("unknown-key", "config", "a misspelt key: `train.lr=0.1`", _overrides("train.lr=0.1"),
             2, ("config key 'train.lr'", "unknown key", "did you mean", "'train.lr0'")),
    BadInput("wrong-type", "config", "a word for a number: `train.epochs=ten`", _overrides("train.epochs=ten"),
             2, ("config key 'train.epochs'", "expected an integer, got 'ten'")),
    BadInput("bad-choice", "config", "a value outside its choices: `train.optimizer=adam`",
             _overrides("train.optimizer=adam"), 2,
             ("config key 'train.optimizer'", "must be one of ['sgd', 'adamw']")),
    BadInput("malformed-yaml", "config", "a config file that is not YAML", _config_file("train: [epochs: 1\n"),
             2, ("{here}/bad.yaml", "not valid YAML")),
    BadInput("not-a-mapping", "config", "a config file holding a list", _config_file("- train\n- epochs\n"),
             2, ("{here}/bad.yaml", "must hold a mapping")),
    BadInput("missing-config", "config", "`--config` naming no file",
             lambda world, here: Prepared(["train", "--config", str(here / "nope.yaml")]),
             2, ("--config", "{here}/nope.yaml")),
    BadInput("override-without-value", "config", "an override without `=`: `train.epochs`",
             _overrides("train.epochs"), 2, ("train.epochs", "key.path=value")),
    BadInput("override-not-yaml", "config", "an override whose value is not YAML: `train.freeze=[1,`",
             _overrides("train.freeze=[1,"), 2, ("config key 'train.freeze'", "not valid YAML")),
    BadInput("section-as-value", "config", "a section given a value: `train=5`", _overrides("train=5"),
             2, ("config key 'train'", "expected a mapping")),
    BadInput("negative-size", "config", "a negative batch: `train.batch_size=-8`",
             _overrides("train.batch_size=-8"), 2, ("config key 'train.batch_size'", "must be > 0, got -8")),
    BadInput("imgsz-not-stride", "config", "an image size off the stride: `train.imgsz=100`",
             _overrides("train.imgsz=100"), 2, ("config key 'train.imgsz'", "multiple of 32")),
    BadInput("conflicting-debug", "config", "two settings that exclude each other: `debug.anomaly_hooks` with "
             "`debug.cuda_sync_check`", _overrides("debug.anomaly_hooks=true", "debug.cuda_sync_check=true"),
             2, ("config key 'debug.anomaly_hooks'", "debug.cuda_sync_check")),
    BadInput("missing-model", "config", "a model yaml that does not exist", _overrides("model=no-such-model.yaml"),
             2, ("config key 'model'", "no-such-model.yaml")),
    BadInput("infinite-lr", "config", "an infinite learning rate: `train.lr0=.inf`", _overrides("train.lr0=.inf"),
             2, ("config key 'train.lr0'", "must be a finite number, got inf")),
    BadInput("nan-lr", "config", "a NaN learning rate: `train.lr0=.nan`", _overrides("train.lr0=.nan"),
             2, ("config key 'train.lr0'", "must be a finite number, got nan")),
    BadInput("ema-decay-above-one", "config", "an EMA decay above 1: `train.ema_decay=2`",
             _overrides("train.ema_decay=2"), 2, ("config key 'train.ema_decay'", "must be in [0, 1), got 2.0")),
    BadInput("ema-decay-negative", "config", "a negative EMA decay: `train.ema_decay=-5`",
             _overrides("train.ema_decay=-5"), 2, ("config key 'train.ema_decay'", "must be in [0, 1), got -5.0")),
    BadInput("ema-tau-zero", "config", "an EMA ramp of zero: `train.ema_tau=0`", _overrides("train.ema_tau=0"),
             2, ("config key 'train.ema_tau'", "must be > 0, got 0.0")),
    BadInput("augment-out-of-range", "config", "an augmentation outside [0, 1]: `augment.hsv_h=2`",
             _overrides("augment.hsv_h=2"), 2, ("config key 'augment'", "augment.hsv_h must be in [0, 1], got 2.0")),
    BadInput("batch-larger-than-data", "config", "a batch larger than the train split: `train.batch_size=100000` on 16 "
             "images", _overrides("train.batch_size=100000"), 2,
             ("config key 'train.batch_size'", "100000 is more than the 16 images of the train split")),
    BadInput("error-fraction-above-one", "config", "a data error budget above 1: `train.max_data_error_fraction=2`",
             _overrides("train.max_data_error_fraction=2"), 2,
             ("config key 'train.max_data_error_fraction'", "must be in [0, 1], got 2.0")),
    BadInput("negative-spike-zscore", "config", "a negative spike threshold: `guard.spike_zscore=-1`",
             _overrides("guard.spike_zscore=-1"), 2, ("config key 'guard.spike_zscore'", "must be ≥ 0, got -1.0")),
    BadInput("negative-rollbacks", "config", "a negative rollback budget: `guard.max_rollbacks=-1`",
             _overrides("guard.max_rollbacks=-1"), 2, ("config key 'guard.max_rollbacks'", "must be ≥ 0, got -1")),
    BadInput("negative-warmup", "config", "a negative warmup: `train.warmup_epochs=-1`",
             _overrides("train.warmup_epochs=-1"), 2, ("config key 'train.warmup_epochs'", "must be ≥ 0, got -1.0")),
    BadInput("negative-timeout", "config", "a negative collective timeout: `distributed.timeout_s=-1`",
             _overrides("distributed.timeout_s=-1"), 2, ("config key 'distributed.timeout_s'", "must be > 0, got -1")),
]


def _unknown_block(world: World, here: Path) -> Prepared:
    cfg = yaml.safe_load(world.model.read_text())
    cfg["backbone"][2][2] = "C3Fancy"
    path = here / "fancy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Prepared(["model", "info", "--cfg", str(path)])


CONFIG.append(BadInput("unknown-block", "config", "a model yaml with a block yolotr does not have (`C3Fancy`)",
                       _unknown_block, 2, ("{here}/fancy.yaml", "C3Fancy", "layer 2")))
CONFIG = [dataclasses.replace(case, kept=NO_RUN) for case in CONFIG]  # refused before anything is made
