"""The stability study's definition (configs/study/stability.yaml): which cells it trains, for how long, on what.

A cell is one real training run: `yolotr train --config <base> <overrides>`, where the overrides are the cell's
bundles (named groups of `key.path: value` overrides such as `clip` or `guard`), its learning rate and the
profile's size settings. Everything the runner passes to the trainer is therefore visible in the study file and in
each cell's resolved config.yaml. Mistakes in the file raise `StudyError` naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolotr.errors import UsageError


class StudyError(UsageError):
    """A study file that cannot be used; the message names the file and the key."""

    def __init__(self, source: str | Path, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")


@dataclass(frozen=True)
class Profile:
    """How long and on how much data every cell trains (`quick` or `full`)."""

    steps: int
    """Optimizer steps per cell (train.max_steps)."""
    imgsz: int
    """Train and validation image size (the synthetic set is drawn at this size too)."""
    batch_size: int
    """Global batch size; the 2-process cells split it across ranks."""
    train_images: int
    """Images of the synthetic train split."""
    val_images: int
    """Images of the synthetic val split (mAP is measured on these)."""
    timeout_s: int = 1800
    """A cell still running after this long is killed and reported as timed out."""
    learning_rates: dict[str, float] = field(default_factory=dict)
    """This profile's values of some of the study's `learning_rates` (the stress level depends on run length and
    image size)."""


@dataclass(frozen=True)
class Cell:
    """One configuration of the matrix."""

    id: str
    """Short name; also the cell's run folder under DIR/runs/."""
    group: str
    """The question the cell belongs to (one plot panel per group)."""
    title: str
    """What the cell is, in words, for the table."""
    lr: str
    """A key of the study's `learning_rates` (default, stress)."""
    bundles: tuple[str, ...] = ()
    """Names of override bundles applied in order on top of the base config."""
    procs: int = 1
    """Processes (ranks); > 1 launches torchrun with the CLI's --procs instead."""
    quick: bool = True
    """Part of the --quick matrix (the full matrix runs every cell)."""


@dataclass(frozen=True)
class StudyDefinition:
    source: Path
    base: Path
    """Training config every cell starts from (the naive setting)."""
    learning_rates: dict[str, float]
    profiles: dict[str, Profile]
    bundles: dict[str, dict[str, Any]]
    cells: tuple[Cell, ...]
    data_seed: int = 0

    def select(self, quick: bool, only: list[str] | None = None) -> list[Cell]:
        """The cells to run: the quick subset or all of them; with `only`, exactly those cells, quick or not."""
        cells = [c for c in self.cells if c.quick or not quick]
        if only:
            unknown = sorted(set(only) - {c.id for c in self.cells})
            if unknown:
                raise StudyError(self.source, "cells", f"no cell named {', '.join(unknown)} "
                                 f"(cells: {', '.join(c.id for c in self.cells)})")
            cells = [c for c in self.cells if c.id in only]
        return cells

    def learning_rate(self, cell: Cell, profile: Profile) -> float:
        return profile.learning_rates.get(cell.lr, self.learning_rates[cell.lr])

    def overrides(self, cell: Cell, profile: Profile, world_size: int) -> dict[str, Any]:
        """The `key.path: value` overrides that turn the base config into this cell (data and run.dir excluded);
        later bundles win over earlier ones, and every bundle over the profile and the learning rate."""
        values: dict[str, Any] = {
            "train.max_steps": profile.steps,
            "train.imgsz": profile.imgsz,
            "train.batch_size": profile.batch_size,
            "train.nominal_batch_size": profile.batch_size,
            "val.batch_size": profile.batch_size,
            "train.lr0": self.learning_rate(cell, profile),
        }
        for name in cell.bundles:
            values.update(self.bundles[name])
        if profile.batch_size % world_size:
            raise StudyError(self.source, f"cells.{cell.id}", f"the global batch of {profile.batch_size} images does "
                             f"not split over {world_size} ranks (--procs)")
        return values


_CELL_KEYS = {"id", "group", "title", "lr", "bundles", "procs", "quick"}


def load_study(path: str | Path) -> StudyDefinition:
    """Reads and checks a study file (yaml, safe_load)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise StudyError(path, "<file>", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise StudyError(path, "<file>", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise StudyError(path, "<root>", "must be a mapping")
    for key in ("base", "learning_rates", "profiles", "bundles", "cells"):
        if key not in data:
            raise StudyError(path, key, "missing")
    base = Path(data["base"])
    if not base.is_file():
        raise StudyError(path, "base", f"file not found: {base}")
    learning_rates = _mapping(path, "learning_rates", data["learning_rates"])
    for name, lr in learning_rates.items():
        _check_learning_rate(path, f"learning_rates.{name}", lr)
    profiles = {name: _profile(path, name, values, learning_rates)
                for name, values in _mapping(path, "profiles", data["profiles"]).items()}
    for required in ("quick", "full"):
        if required not in profiles:
            raise StudyError(path, f"profiles.{required}", "missing")
    bundles = {name: _mapping(path, f"bundles.{name}", values)
               for name, values in _mapping(path, "bundles", data["bundles"]).items()}
    if not isinstance(data["cells"], list) or not data["cells"]:
        raise StudyError(path, "cells", "must be a non-empty list")
    cells = tuple(_cell(path, i, values, learning_rates, bundles) for i, values in enumerate(data["cells"]))
    ids = [c.id for c in cells]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise StudyError(path, "cells", f"duplicate id {', '.join(duplicates)}")
    return StudyDefinition(source=path, base=base, learning_rates={k: float(v) for k, v in learning_rates.items()},
                           profiles=profiles, bundles=bundles, cells=cells, data_seed=int(data.get("data_seed", 0)))


def _mapping(source: Path, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise StudyError(source, key, f"must be a mapping, got {type(value).__name__}")
    return value


def _profile(source: Path, name: str, values: Any, learning_rates: dict) -> Profile:
    values = dict(_mapping(source, f"profiles.{name}", values))
    own_rates = _mapping(source, f"profiles.{name}.learning_rates", values.pop("learning_rates", {}))
    for key, lr in own_rates.items():
        if key not in learning_rates:
            raise StudyError(source, f"profiles.{name}.learning_rates.{key}", f"not one of {', '.join(learning_rates)}")
        _check_learning_rate(source, f"profiles.{name}.learning_rates.{key}", lr)
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StudyError(source, f"profiles.{name}.{key}", f"must be an integer >= 1, got {value!r}")
    try:
        profile = Profile(**values, learning_rates={k: float(v) for k, v in own_rates.items()})
    except TypeError as exc:
        raise StudyError(source, f"profiles.{name}", str(exc)) from None
    if profile.imgsz % 32:
        raise StudyError(source, f"profiles.{name}.imgsz", f"must be a multiple of 32, got {profile.imgsz}")
    return profile


def _check_learning_rate(source: Path, key: str, lr: Any) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise StudyError(source, key, f"must be a number > 0, got {lr!r}")


def _cell(source: Path, index: int, values: Any, learning_rates: dict, bundles: dict) -> Cell:
    where = f"cells[{index}]"
    values = _mapping(source, where, values)
    unknown = sorted(set(values) - _CELL_KEYS)
    if unknown:
        raise StudyError(source, f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_CELL_KEYS))})")
    for key in ("id", "group", "title", "lr"):
        if not isinstance(values.get(key), str) or not values[key]:
            raise StudyError(source, f"{where}.{key}", "must be a non-empty string")
    if values["lr"] not in learning_rates:
        raise StudyError(source, f"{where}.lr", f"{values['lr']!r} is not one of {', '.join(learning_rates)}")
    names = values.get("bundles", [])
    if not isinstance(names, list):
        raise StudyError(source, f"{where}.bundles", "must be a list of bundle names")
    for name in names:
        if name not in bundles:
            raise StudyError(source, f"{where}.bundles", f"unknown bundle {name!r} (bundles: {', '.join(bundles)})")
    procs = values.get("procs", 1)
    if isinstance(procs, bool) or not isinstance(procs, int) or procs < 1:
        raise StudyError(source, f"{where}.procs", f"must be an integer >= 1, got {procs!r}")
    return Cell(id=values["id"], group=values["group"], title=values["title"], lr=values["lr"],
                bundles=tuple(names), procs=procs, quick=bool(values.get("quick", True)))


__all__ = ["Cell", "Profile", "StudyDefinition", "StudyError", "load_study"]
