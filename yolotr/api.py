"""The Python API: one object for a detector, from a yaml, yolotr weights or a yolov5 checkpoint.

    from yolotr import YOLO

    model = YOLO("yolotr-s.yaml")                 # a model yaml or a preset name: fresh weights
    model = YOLO("runs/exp/weights/best.safetensors")   # yolotr weights, a checkpoint or a run folder
    model = YOLO("yolov5s.pt")                    # an ultralytics/yolov5 checkpoint (read without its pickle code)
    model.train(data="data.yaml", epochs=10, imgsz=320)  # the CLI's trainer, in this process
    metrics = model.val(data="data.yaml")         # {"map50": ..., "map": ..., "precision": ..., ...}
    results = model.predict("images/")            # per image: boxes (x1y1x2y2 pixels), scores, classes, names
    model.export(format="onnx")                   # an .onnx checked against onnxruntime

The class is called `YOLO` because that is what ultralytics calls it: code written for `ultralytics.YOLO` ports by
changing its import. Multi-GPU training stays with the launchers (`launch/launch.sh`, torchrun, Slurm), which run
the same trainer in every rank.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from yolotr.checkpoint.pretrained import is_model_yaml, transfer_from
from yolotr.checkpoint.weights_file import load_weights, read_weights_file
from yolotr.config.presets import find_file
from yolotr.model.transfer import TransferReport
from yolotr.model.yolo import DetectionModel

# ultralytics' names for the keys users pass most, so that their calls carry over.
ALIASES = {"batch": "train.batch_size", "workers": "train.num_workers", "optimizer": "train.optimizer"}


@dataclass
class Detections:
    """What `YOLO.predict` finds in one image."""

    name: str
    """The image's file name (`image<i>` for an array)."""
    boxes: np.ndarray
    """(n, 4) x1 y1 x2 y2 in the pixels of the original image."""
    scores: np.ndarray
    """(n,) confidence: objectness × class score."""
    classes: np.ndarray
    """(n,) class index into `names`."""
    names: list[str]

    @property
    def labels(self) -> list[str]:
        return [self.names[int(c)] for c in self.classes]


class YOLO:
    """A detector: `YOLO(yaml | preset | weights | checkpoint | yolov5 .pt, nc=None)`; `nc` sets the classes of a
    model built from a yaml (a training run sets them from its data anyway)."""

    def __init__(self, model: str | os.PathLike = "yolotr-n.yaml", *, nc: int | None = None) -> None:
        self.source = find_file(str(model), "models")
        if is_model_yaml(self.source):
            self.model = DetectionModel(self.source, nc=nc).eval()
            self.names = [f"class{i}" for i in range(self.model.nc)]
            self.imgsz = 640
        else:
            loaded = load_weights(self.source)
            self.model, self.names, self.imgsz = loaded.model, loaded.names, loaded.imgsz
        self.run_dir: Path | None = None
        self.data: str | None = None

    def __repr__(self) -> str:
        return f"YOLO({self.source!r}, nc={self.model.nc}, imgsz={self.imgsz})"

    def __call__(self, source, **kwargs) -> list[Detections]:
        return self.predict(source, **kwargs)

    # ------------------------------------------------------------------ weights
    def load(self, weights: str | os.PathLike) -> TransferReport:
        """Loads every tensor of `weights` (yolotr weights, a checkpoint or a yolov5 .pt) whose layer, name and shape
        fit this model; returns what was loaded and which layers stayed fresh."""
        report = transfer_from(self.model, read_weights_file(weights), str(weights))
        self.model.eval()
        return report

    # ------------------------------------------------------------------ training
    def train(self, data: str | os.PathLike, epochs: int | None = None, *, config: str | os.PathLike | None = None,
              **overrides) -> dict:
        """Trains with the CLI's trainer in this process, starting from this model's yaml or weights; afterwards the
        object holds the run's best weights. `config` is a training yaml or preset (demo, coco-yolov5); keyword
        overrides take a key path (`**{"train.lr0": 0.01}`), a field name (`imgsz=320`, `lr0=0.01`, `seed=1`) or an
        ultralytics name (`batch`, `workers`). Returns the final validation's metrics; raises RuntimeError if the run
        stops early (its run folder's exit.json says why)."""
        from yolotr.config import load_config
        from yolotr.engine.train_cli import train

        settings = {"model": self.source, "data": str(data), **({"train.epochs": epochs} if epochs else {})}
        settings.update({config_key(key): value for key, value in overrides.items()})
        cfg = load_config(config, [f"{key}={json.dumps(value)}" for key, value in settings.items()])
        with _signal_handlers_restored([*cfg.checkpoint.preempt_signals, "SIGINT"]):
            code = train(cfg)
        self.run_dir, self.data = Path(cfg.run.dir), str(data)
        if code != 0:
            raise RuntimeError(f"training stopped with exit code {code}; see {self.run_dir / 'exit.json'}")
        weights = self.run_dir / "weights"
        self.__init__(weights / "best.safetensors" if (weights / "best.safetensors").is_file()
                      else weights / "last.safetensors")
        self.run_dir, self.data = Path(cfg.run.dir), str(data)
        records = [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines()]
        final = [r for r in records if r.get("kind") == "val"]
        return {k: v for k, v in final[-1].items() if k not in ("kind", "time")} if final else {}

    # ------------------------------------------------------------------ evaluation
    def val(self, data: str | os.PathLike | None = None, *, imgsz: int | None = None, batch_size: int = 32,
            conf: float = 0.001, iou: float = 0.6, max_det: int = 300, device: str | None = None) -> dict:
        """COCO mAP on the val split of `data` (a shard, YOLO-format or COCO dataset; default: the data it was
        trained on here), as `yolotr val` computes it: {"map50", "map", "precision", "recall", per class, ...}."""
        from yolotr.data.coco_gt import coco_ground_truth
        from yolotr.data.dataset_cache import resolve_data
        from yolotr.data.spec import load_data_yaml
        from yolotr.data.stream import ValStream
        from yolotr.eval.validator import validate
        from yolotr.track.fitness import fitness

        if data is None and self.data is None:
            raise ValueError("val() needs data= (this model has not been trained here)")
        spec = load_data_yaml(resolve_data(data or self.data), splits=("val",))
        if spec.nc != self.model.nc:
            raise ValueError(f"{data}: {spec.nc} classes, but the model predicts {self.model.nc}")
        stream = ValStream(spec.val, rank=0, world_size=1, batch_size=batch_size, imgsz=imgsz or self.imgsz)
        result = validate(self.model, stream, coco_ground_truth(spec.val, list(spec.names)), list(spec.names),
                          device=_device(device), conf_thres=conf, iou_thres=iou, max_det=max_det)
        return {**result.summary(), "fitness": fitness(result)}

    def predict(self, source, *, conf: float = 0.25, iou: float = 0.45, imgsz: int | None = None,
                max_det: int = 300, batch_size: int = 8, device: str | None = None) -> list[Detections]:
        """Detections per image of `source`: an image file, a folder, shards (as `yolotr predict --source` takes),
        an (H, W, 3) uint8 RGB array, or a list of these."""
        from yolotr.data.batch import build_val_images
        from yolotr.data.boxes import letterbox_to_original
        from yolotr.eval.validator import predict_batch

        imgsz = imgsz or self.imgsz
        results = []
        for chunk in _chunks(_images(source), batch_size):
            images, _, ratio_pad = build_val_images([sample for _, sample in chunk], size=imgsz)  # (B, 3, S, S)
            found = predict_batch(self.model, images, device=_device(device), conf_thres=conf, iou_thres=iou,
                                  max_det=max_det, multi_label=False)
            for (name, sample), boxes, scaling in zip(chunk, found, ratio_pad):
                boxes = boxes.detach().float().cpu()  # (n, 6) x1 y1 x2 y2 conf cls, letterboxed pixels
                xyxy = letterbox_to_original(boxes[:, :4], scaling, sample.image.shape[:2])  # original pixels
                results.append(Detections(name, xyxy.numpy(), boxes[:, 4].numpy(), boxes[:, 5].long().numpy(),
                                          list(self.names)))
        return results

    def export(self, format: str = "onnx", *, imgsz: int | None = None, dynamic: bool = False, half: bool = False,
               out: str | os.PathLike | None = None) -> Path:
        """Exports to one format (onnx, torchscript, openvino, engine), checks it against PyTorch on the same images
        (as `yolotr export` does) and returns its path; a mismatch raises."""
        from yolotr.checkpoint.weights_file import LoadedWeights
        from yolotr.eval.exporter import ExportSettings, export

        imgsz = imgsz or self.imgsz
        source = Path(self.source)
        if out is None:
            out = source.parent if source.is_file() and not is_model_yaml(self.source) else Path.cwd()
        loaded = LoadedWeights(model=self.model, names=list(self.names), imgsz=imgsz, meta={"path": str(source)})
        report = export(loaded, ExportSettings(formats=(format,), imgsz=imgsz, dynamic=dynamic, half=half), out)
        row = next(r for r in report.rows if r.format == format)
        if not row.ok:
            raise RuntimeError(f"{row.path}: differs from PyTorch beyond {row.tolerance.describe()} "
                               f"(max abs diff {row.max_abs_error:.3g})")
        return row.path


def config_key(name: str) -> str:
    """The config key path a keyword means: a key path as is, an ultralytics alias, or the field of that name
    (in `train` when several sections have one)."""
    from yolotr.config import Config

    if "." in name or name in (f.name for f in dataclasses.fields(Config)):
        return name
    if name in ALIASES:
        return ALIASES[name]
    matches = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        if dataclasses.is_dataclass(hints[section.name]):
            matches += [f"{section.name}.{f.name}" for f in dataclasses.fields(hints[section.name]) if f.name == name]
    if f"train.{name}" in matches:
        return f"train.{name}"
    if len(matches) != 1:
        raise TypeError(f"unknown training option {name!r}" if not matches else
                        f"{name!r} is ambiguous ({', '.join(matches)}): pass the key path, e.g. **{{'{matches[0]}': ...}}")
    return matches[0]


@contextmanager
def _signal_handlers_restored(names: list[str]):
    """The trainer turns SIGTERM/SIGUSR1 and Ctrl-C into a checkpoint request; in a user's process that lasts the run
    only."""
    saved = {name: signal.getsignal(getattr(signal, name)) for name in names}
    try:
        yield
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)


def _device(device: str | None) -> torch.device:
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _images(source) -> Iterator[tuple[str, object]]:
    """(name, DecodedSample without boxes) for every image of a source (see `YOLO.predict`)."""
    from yolotr.data.decode import DecodedSample
    from yolotr.data.labels import DetectionLabel
    from yolotr.eval.sources import Source

    items = source if isinstance(source, (list, tuple)) else [source]
    for position, item in enumerate(items):
        if isinstance(item, np.ndarray):
            found = [(f"image{position}", item)]
        else:
            found = ((frame.name, frame.image) for frame in Source(item) if frame.image is not None)
        for name, array in found:
            height, width = array.shape[:2]
            empty = DetectionLabel(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), width, height, name)
            yield name, DecodedSample(key=name, image=array, label=empty)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
