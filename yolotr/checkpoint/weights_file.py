"""The consolidated weights file that `val`, `predict` and `export` take: weights plus what rebuilds the model.

Format (version 1):
- `.safetensors`: tensors `model.<name>` and, when an EMA exists, `ema.<name>`; string metadata `format`
  ("yolotr"), `version`, `model_yaml`, `names`, `imgsz` and `extra` (the last four as JSON).
- `.pt`: one dict of plain tensors/containers with the same fields, loadable with
  `torch.load(weights_only=True)`.

`read_weights_file` (and so `val`, `predict`, `export` and `train.weights`) also reads a yolotr training checkpoint
(`RUN/checkpoints/step-N`, or a run folder: its newest valid one) and an ultralytics/yolov5 `.pt` (released or a
user's last.pt / best.pt, full or stripped), through an unpickler that rebuilds tensors and plain containers only
and refuses anything else by name (`yolov5_pickle.py`).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yolotr.checkpoint.checkpoint_weights import read_checkpoint_weights
from yolotr.checkpoint.weights_errors import WeightsFileError
from yolotr.checkpoint.yolov5_pickle import as_yolotr_yaml, read_yolov5_checkpoint
from yolotr.model.transfer import with_head_aliases
from yolotr.model.yolo import DetectionModel, ModelConfigError

FORMAT_NAME = "yolotr"
FORMAT_VERSION = 1
SUFFIXES = (".safetensors", ".pt")


@dataclass
class WeightsFile:
    """The raw contents of a weights file, before any model is built."""

    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None
    model_yaml: dict[str, Any]
    names: list[str]
    imgsz: int
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form: the training step and config for yolotr files; `source_format` ("yolov5", "yolotr-checkpoint")
    and `strides` for the others."""
    version: int = FORMAT_VERSION


@dataclass
class LoadedWeights:
    """A model ready for inference and what it was trained for."""

    model: torch.nn.Module
    """DetectionModel in eval mode, fp32, holding the EMA weights when the file has them (and prefer_ema)."""
    names: list[str]
    imgsz: int
    meta: dict[str, Any]
    """`version`, `extra`, `path` and `weights` ("ema" or "model": which set the model holds)."""


def save_weights(
    path: str | os.PathLike,
    *,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor] | None,
    model_yaml: dict[str, Any],
    names: list[str],
    imgsz: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a weights file (format chosen by the suffix); written to a temporary name, then renamed,
    so a crash never leaves a half-written file under the final name."""
    path = Path(path)
    _check_suffix(path)
    if len(names) != int(model_yaml.get("nc", len(names))):
        raise ValueError(f"{path}: {len(names)} class names but model yaml nc={model_yaml.get('nc')}")
    tensors = {f"model.{k}": v for k, v in _plain_tensors(model_state, "model_state").items()}
    if ema_state is not None:
        tensors.update({f"ema.{k}": v for k, v in _plain_tensors(ema_state, "ema_state").items()})
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        # Through JSON for both formats: the .pt then holds only what weights_only loading accepts
        # (a Path or a tuple in a config would otherwise make the file unloadable or differ by format).
        "model_yaml": json.loads(json.dumps(model_yaml)),
        "names": [str(n) for n in names],
        "imgsz": int(imgsz),
        "extra": json.loads(json.dumps(extra or {}, default=str)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            metadata = {key: value if isinstance(value, str) else json.dumps(value) for key, value in header.items()}
            # Written by Python rather than by save_file, which creates its file -rw------- whatever the umask: the
            # weights are shared like every other file of the run.
            tmp.write_bytes(save(tensors, metadata=metadata))
        else:
            torch.save({**header, "tensors": tensors}, tmp)
        os.replace(tmp, path)
    except BaseException:
        try:  # a full disk's cut file: it would hold the space the user is asked to free
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return path


def read_weights_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> WeightsFile:
    """Parse a weights file (or a training checkpoint, or a yolov5 .pt) into its parts, validating every field
    (errors name the file and the key)."""
    path = Path(path)
    if path.is_dir():
        return _from_checkpoint(path)
    _check_suffix(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as handle:
                raw_meta = handle.metadata() or {}
            tensors = load_file(str(path), device=str(device))
        except SafetensorError as error:  # a truncated or foreign file: safetensors says only "invalid header"
            raise WeightsFileError(f"{path}: not a readable .safetensors file ({error}); was it cut short?") from None
        header: dict[str, Any] = {}
        for key in ("format", "version", "model_yaml", "names", "imgsz", "extra"):
            if key not in raw_meta:
                raise WeightsFileError(f"{path}: metadata key '{key}' missing; not a yolotr weights file")
            header[key] = raw_meta[key] if key == "format" else json.loads(raw_meta[key])
    else:
        if not zipfile.is_zipfile(path):  # torch.load would answer with an error from deep inside pickle
            raise WeightsFileError(f"{path}: not a .pt weights file (torch saves those as zip archives); was it cut "
                                   "short, or is it another kind of file?")
        try:
            header = torch.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError:  # pickled modules: a yolov5 checkpoint, or a file to refuse naming its global
            return _from_yolov5(path)
        except Exception as error:  # torch raises UnpicklingError with a long explanation
            raise WeightsFileError(f"{path}: not a weights-only .pt file (refusing to unpickle it): {error}") from error
        if not isinstance(header, dict) or "tensors" not in header:
            raise WeightsFileError(f"{path}: not a yolotr weights file (expected a dict with 'tensors')")
        tensors = header.pop("tensors")

    if header.get("format") != FORMAT_NAME:
        raise WeightsFileError(f"{path}: format {header.get('format')!r} is not {FORMAT_NAME!r}")
    if int(header["version"]) > FORMAT_VERSION:
        raise WeightsFileError(f"{path}: format version {header['version']} is newer than this yolotr "
                               f"({FORMAT_VERSION})")
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    ema_state = {k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")}
    if not model_state and not ema_state:
        raise WeightsFileError(f"{path}: holds no model.* or ema.* tensors")
    return WeightsFile(
        model_state=model_state,
        ema_state=ema_state or None,
        model_yaml=dict(header["model_yaml"]),
        names=[str(n) for n in header["names"]],
        imgsz=int(header["imgsz"]),
        extra=dict(header["extra"] or {}),
        version=int(header["version"]),
    )


def _from_yolov5(path: Path) -> WeightsFile:
    checkpoint = read_yolov5_checkpoint(path)
    model_yaml = as_yolotr_yaml(checkpoint.model_yaml)
    ema = checkpoint.ema_state
    return WeightsFile(
        model_state=with_head_aliases(checkpoint.model_state, model_yaml),
        ema_state=with_head_aliases(ema, model_yaml) if ema is not None else None,
        model_yaml=model_yaml,
        names=checkpoint.names,
        imgsz=checkpoint.meta.get("imgsz") or 640,
        extra={"source_format": "yolov5", "strides": checkpoint.stride, "epoch": checkpoint.meta.get("epoch"),
               "date": checkpoint.meta.get("date")},
    )


def _from_checkpoint(path: Path) -> WeightsFile:
    model_state, ema_state, meta = read_checkpoint_weights(path)
    return WeightsFile(
        model_state=model_state,
        ema_state=ema_state,
        model_yaml=dict(meta["model_yaml"]),
        names=[str(n) for n in meta["names"]],
        imgsz=int(meta["imgsz"]),
        extra={"source_format": "yolotr-checkpoint", "step": meta["counters"]["step"], "config": meta.get("config")},
    )


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu", prefer_ema: bool = True) -> LoadedWeights:
    """Build the DetectionModel a weights file describes and load its (EMA) weights, in eval mode."""
    contents = read_weights_file(path, device="cpu")
    use_ema = (prefer_ema and contents.ema_state is not None) or not contents.model_state
    state = contents.ema_state if use_ema and contents.ema_state is not None else contents.model_state
    model = build_described_model(contents, path, nc=len(contents.names))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise WeightsFileError(f"{path}: weights do not fit the model its yaml describes: {error}") from error
    model = model.float().to(device).eval()
    meta = {
        "version": contents.version,
        "extra": contents.extra,
        "path": str(path),
        "weights": "ema" if use_ema else "model",
    }
    return LoadedWeights(model=model, names=contents.names, imgsz=contents.imgsz, meta=meta)


def build_described_model(contents: WeightsFile, path: str | os.PathLike, **kwargs) -> DetectionModel:
    """The DetectionModel a weights file's own model yaml describes; an error in that yaml names the file (the
    parser only knows it was handed a dict)."""
    try:
        return DetectionModel(dict(contents.model_yaml), ch=int(contents.model_yaml.get("ch", 3)), **kwargs)
    except ModelConfigError as error:
        raise ModelConfigError(f"{path} (the model it describes)", error.problem, error.layer) from None


def _check_suffix(path: Path) -> None:
    if path.suffix not in SUFFIXES:
        raise WeightsFileError(f"{path}: weights files are {' or '.join(SUFFIXES)}, not '{path.suffix}'")


def _plain_tensors(state: dict[str, Any], what: str) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies: safetensors refuses tensors that share storage (tied weights)."""
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what}['{key}'] is a {type(value).__name__}, not a tensor")
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out
