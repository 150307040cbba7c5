"""The model a training run starts from: an architecture (a model yaml, or the one a weights file carries), with
weights transferred layer by layer from `train.weights`, and frozen layers.

    model=yolotr-s.yaml                          fresh yolotr-s
    model=yolotr-s.yaml train.weights=yolov5s.pt yolotr-s, every yolov5s tensor that fits loaded (report printed)
    model=yolov5s.pt                             yolov5s's own architecture and weights (head fresh if nc differs)
"""

from __future__ import annotations

import logging
from pathlib import Path

from yolotr.checkpoint.weights_file import WeightsFile, build_described_model, read_weights_file
from yolotr.config.presets import YAML_SUFFIXES, find_file
from yolotr.model.transfer import TransferReport, freeze_layers, transfer_state
from yolotr.model.yolo import DetectionModel

log = logging.getLogger(__name__)


def is_model_yaml(path: str) -> bool:
    return Path(path).suffix in YAML_SUFFIXES


def build_model(model: str, weights: str | None = None, *, nc: int, transformer: dict | None = None,
                freeze: int | list[int] = 0, verbose: bool = True) -> tuple[DetectionModel, TransferReport | None]:
    """The DetectionModel `model` describes (a yaml or preset name, or a weights file / checkpoint whose
    architecture is used), with `nc` classes, the weights of `weights` (default: `model` itself when it is a weights
    file) transferred into it, and the layers `freeze` names frozen. Prints the transfer report when `verbose`."""
    model = find_file(model, "models")
    source: WeightsFile | None = None
    if is_model_yaml(model):
        built = DetectionModel(model, nc=nc, transformer=transformer)
    else:
        source = read_weights_file(model)
        built = build_described_model(source, model, nc=nc, transformer=transformer)
    report = None
    if weights is not None or source is not None:
        if weights is not None and weights != model:
            source = read_weights_file(weights)
        assert source is not None  # read above: from `weights`, or `model` is itself a weights file
        report = transfer_from(built, source, weights or model)
        if verbose:
            log.info(f"weights: {report.summary()}")
    frozen = freeze_layers(built, freeze)
    if frozen and verbose:
        log.info(f"frozen layers: {', '.join(map(str, frozen))}")
    return built, report


def transfer_from(model: DetectionModel, source: WeightsFile, name: str) -> TransferReport:
    """Loads a weights file's EMA weights (its model weights when it has no EMA) into `model`, layer by layer."""
    state = source.ema_state if source.ema_state is not None else source.model_state
    strides = source.extra.get("strides") or None
    return transfer_state(model, state, source_yaml=source.model_yaml, source_strides=strides, source=str(name))
