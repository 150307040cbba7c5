"""The presets shipped inside the package, and how a name or a relative path written in a config file is found.

    presets/models/*.yaml  model yamls (yolotr-n/s/m, yolov5n/s/m, yolov5s-transformer)
    presets/train/*.yaml   training configs (demo, coco-yolov5)

In a checkout, `configs/models` and `configs/train` are links to these folders, so the paths users and scripts have
always written keep working; after a plain `pip install` the presets come with the package, as ultralytics ships its
yamls. Lookup order for a relative path written in a config file: beside that config file, then the working
directory; for a model (or a `--config`) that is still not found, the preset of that name (`yolotr-s`,
`yolotr-s.yaml`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

PRESETS_DIR = Path(__file__).resolve().parent
YAML_SUFFIXES = (".yaml", ".yml")
PresetKind = Literal["models", "train"]


def preset_names(kind: PresetKind) -> list[str]:
    return sorted(p.stem for p in (PRESETS_DIR / kind).glob("*.yaml"))


def find_preset(name: str, kind: PresetKind) -> Path | None:
    """The shipped preset `name` (with or without .yaml) of that kind, or None. Only bare names are presets:
    `configs/models/x.yaml` is a path, even when no such file exists."""
    if not name or Path(name).name != name:
        return None
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in YAML_SUFFIXES else name
    path = PRESETS_DIR / kind / f"{stem}.yaml"
    return path if path.is_file() else None


def beside(value: str, config_dir: Path | None) -> str:
    """`value` as written in a config file in `config_dir`: the path beside the config file when something exists
    there, else unchanged (then relative to the working directory, or a preset name)."""
    if not value or config_dir is None or os.path.isabs(value):
        return value
    candidate = config_dir / value
    return str(candidate) if candidate.exists() else value


def find_file(value: str, kind: PresetKind | None = None) -> str:
    """A path that exists as given (absolute, or relative to the working directory), else the preset of that name
    when `kind` is given, else `value` unchanged so that the caller's check names what is missing."""
    if not value or Path(value).exists() or kind is None:
        return value
    preset = find_preset(value, kind)
    return str(preset) if preset is not None else value


__all__ = ["PRESETS_DIR", "preset_names", "find_preset", "beside", "find_file"]
