"""The Python API: one object for a detector, from a yaml, yolotr weights or a yolov5 checkpoint.

    from yolotr import YOLO

    model = YOLO("yolotr-s.yaml")                 # a model yaml or a preset name: fresh weights
    model = YOLO("runs/exp/weights/best.safetensors")   # yolotr weights, a checkpoint or a run folder
    model = YOLO("yolov5s.pt")                    # an ultralytics/yolov5 checkpoint (read without its pickle code)
    model.add_callback("on_fit_epoch_end", lambda trainer: print(trainer.epoch, trainer.metrics))
    model.train(data="data.yaml", epochs=10, imgsz=320)  # the CLI's trainer, in this process
    metrics = model.val(data="data.yaml")         # {"map50": ..., "map": ..., "precision": ..., ...}
    results = model.predict("images/")            # per image a Results: .boxes.xyxy / .conf / .cls, .plot(), ...
    model.export(format="onnx")                   # an .onnx checked against onnxruntime

The class is called `YOLO` because that is what ultralytics calls it: code written for `ultralytics.YOLO` ports by
changing its import. `train(..., device=[0, 1])` starts one rank per GPU on this machine; several machines stay with
the launchers (`launch/launch.sh`, torchrun, Slurm), which run the same trainer in every rank.
"""

from __future__ import annotations

import json
import os
import signal
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from yolotr.checkpoint.pretrained import is_model_yaml, transfer_from
from yolotr.checkpoint.weights_file import load_weights, read_weights_file
from yolotr.config.presets import find_file
from yolotr.engine.callbacks import Callbacks
from yolotr.model.transfer import TransferReport
from yolotr.model.yolo import DetectionModel

if typing.TYPE_CHECKING:
    from yolotr.eval.results import Results  # imported by predict: its drawing code loads matplotlib


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
        if not hasattr(self, "callbacks"):  # kept when a training run reloads its best weights into this object
            self.callbacks = Callbacks()

    def __repr__(self) -> str:
        return f"YOLO({self.source!r}, nc={self.model.nc}, imgsz={self.imgsz})"

    def __call__(self, source, **kwargs) -> list[Results] | Iterator[Results]:
        return self.predict(source, **kwargs)

    # ------------------------------------------------------------------ weights
    def load(self, weights: str | os.PathLike) -> TransferReport:
        """Loads every tensor of `weights` (yolotr weights, a checkpoint or a yolov5 .pt) whose layer, name and shape
        fit this model; returns what was loaded and which layers stayed fresh."""
        report = transfer_from(self.model, read_weights_file(weights), str(weights))
        self.model.eval()
        return report

    # ------------------------------------------------------------------ training
    def add_callback(self, event: str, fn) -> None:
        """Calls `fn(trainer_view)` at `event` of every later `train()` (ultralytics' names: on_train_start,
        on_train_epoch_end, on_fit_epoch_end, on_model_save, on_train_end, ...; engine/callbacks.py lists them and
        says when each fires). An unknown event raises ValueError naming the valid ones."""
        self.callbacks.add(event, fn)

    def clear_callback(self, event: str) -> None:
        self.callbacks.clear(event)

    def train(self, data: str | os.PathLike, epochs: int | None = None, *, config: str | os.PathLike | None = None,
              **overrides) -> dict:
        """Trains with the CLI's trainer, in this process unless ranks are asked for (below), starting from this
        model's yaml or weights; afterwards the object holds the run's best weights. `config` is a training yaml or
        preset (demo, coco-yolov5); keyword overrides take a key path (`**{"train.lr0": 0.01}`), a field name
        (`batch_size=16`, `max_norm=0.5`) or an ultralytics name (`batch`, `workers`, `optimizer="AdamW"`:
        yolotr/config/aliases.py). `device=[0, 1]` or `nproc=2` (CPU ranks) train in that many ranks, started as
        `yolotr train` starts them (callbacks run in this process, so they need a run in this process). Returns the
        final validation's metrics; raises RuntimeError if the run stops early, with the reason its exit.json holds,
        or the exception of a callback that stopped it."""
        from yolotr.config import load_config
        from yolotr.config.aliases import to_key_paths
        from yolotr.engine.device_choice import apply_device
        from yolotr.engine.rank_launch import launch_ranks
        from yolotr.engine.train_cli import rank_plan, train

        plan = rank_plan({name: overrides.pop(name, None) for name in ("device", "nproc")}, "YOLO.train()")
        settings = {"model": self.source, "data": str(data), **({"train.epochs": epochs} if epochs else {})}
        for name in overrides:
            config_key(name)  # an unknown keyword is a TypeError, as for any Python call
        settings.update(to_key_paths(overrides.items(), "YOLO.train()"))
        arguments = [f"{key}={json.dumps(value)}" for key, value in settings.items()]
        cfg = load_config(config, arguments)  # checked here, before any rank starts
        if plan.ranks > 1:  # as `yolotr train device=0,1` does: a torchrun child, the ranks' output streamed
            if self.callbacks:
                raise ValueError("callbacks run in this process: train in it (no device list or nproc), or "
                                 "clear_callback() first")
            launched = launch_ranks(plan.ranks, [*(["--config", str(config)] if config else []), *arguments],
                                    gpus=plan.gpus)
            if launched.code != 0:
                raise RuntimeError(f"training in {plan.ranks} ranks stopped with exit code {launched.code}: "
                                   f"{launched.reason or 'no rank recorded why; see their output above'}")
            cfg.run.dir = str(launched.run_dir)
            self.run_dir, self.data = Path(cfg.run.dir), str(data)
        else:
            if plan.gpus is not None:
                apply_device(plan.gpus)
            self.callbacks.failure = None  # an earlier run's is not this one's
            with _signal_handlers_restored(cfg.checkpoint.preempt_signals):
                code = train(cfg, self.callbacks)
            self.run_dir, self.data = Path(cfg.run.dir), str(data)
            _raise_callback_failure(self.callbacks, self.run_dir)
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

    def predict(self, source, *, stream: bool = False, conf: float = 0.25, iou: float = 0.45,
                imgsz: int | None = None, max_det: int = 300, batch_size: int = 8,
                device: str | None = None) -> list[Results] | Iterator[Results]:
        """A `Results` per image of `source` (eval/results.py): an image file, a video, a folder, a glob, shards (as
        `yolotr predict --source` takes), an (H, W, 3) uint8 RGB array, or a list of these. A list, or with
        `stream=True` a generator that reads, predicts and hands out one batch at a time (for videos and large
        folders)."""
        from yolotr.eval.prediction_stream import predict_results

        found = predict_results(self.model, _images(source), dict(enumerate(self.names)), imgsz=imgsz or self.imgsz,
                                batch_size=batch_size, device=_device(device), conf_thres=conf, iou_thres=iou,
                                max_det=max_det)
        return found if stream else list(found)

    def export(self, format: str = "onnx", *, imgsz: int | None = None, dynamic: bool = False, half: bool = False,
               out: str | os.PathLike | None = None) -> Path:
        """Exports to one format (onnx, torchscript, openvino, engine), checks it against PyTorch on the same images
        (as `yolotr export` does) and returns its path; a mismatch raises."""
        from yolotr.checkpoint.weights_file import LoadedWeights
        from yolotr.export.exporter import ExportSettings, export

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
    """The config key path a keyword means: a key path as is, an ultralytics name (yolotr/config/aliases.py), or
    the field of that name (in `train` when several sections have one)."""
    from yolotr.config import ConfigError
    from yolotr.config.aliases import TOP_LEVEL_KEYS, resolve_name

    try:
        key = resolve_name(name, "YOLO.train()")
    except ConfigError as error:
        raise TypeError(f"{name!r} {error.problem}") from None
    if key == name and "." not in name and name not in TOP_LEVEL_KEYS:
        raise TypeError(f"unknown training option {name!r}")
    return key


def _raise_callback_failure(callbacks: Callbacks, run_dir: Path) -> None:
    """A callback that stopped the run: its own exception reaches the caller, with a note naming it."""
    if callbacks.failure is None:
        return
    name, event, error = callbacks.failure
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(f"raised by callback {name} ({event}); the run stopped: see {run_dir / 'exit.json'}")
    raise error


@contextmanager
def _signal_handlers_restored(names: list[str]):
    """The trainer turns SIGTERM/SIGUSR1 into a checkpoint request; in a user's process that lasts the run only."""
    saved = {name: signal.getsignal(getattr(signal, name)) for name in names}
    try:
        yield
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)


def _device(device: str | None) -> torch.device:
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _images(source) -> Iterator[tuple[str, np.ndarray]]:
    """(path, (H, W, 3) uint8 RGB) for every readable image or frame of a source (see `YOLO.predict`), lazily."""
    from yolotr.eval.sources import Source

    items = source if isinstance(source, (list, tuple)) else [source]
    for position, item in enumerate(items):
        if isinstance(item, np.ndarray):
            yield f"image{position}.jpg", item
        else:
            for frame in Source(item):
                if frame.image is not None:  # a video frame's path is its video's; a shard sample's, its name
                    file_like = frame.video is not None or Path(frame.origin).name == frame.name
                    yield frame.origin if file_like else frame.name, frame.image
