"""`yolotr predict` as a library function: detections for every frame of a source (sources.py), written by
predict_outputs.py, with per-stage times and a count of what could not be read.

    summary = predict("best.safetensors", "clips/", "out/", PredictSettings(conf_thres=0.4, save_txt=True))
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from yolotr.checkpoint.weights_file import LoadedWeights, load_weights
from yolotr.errors import UsageError, YolotrError
from yolotr.eval.predict_outputs import OutputOptions, PredictionWriter, WrittenFiles
from yolotr.eval.sources import Frame, Source
from yolotr.eval.validator import decoded_predictions, detections_to_rows, network_input
from yolotr.model.nms import non_max_suppression

STAGES = ("pre-process", "inference", "NMS")


class NothingReadableError(YolotrError):
    """Not one frame of the source could be read; the message names what failed and why."""


@dataclass
class PredictSettings:
    conf_thres: float = 0.25
    """Minimum confidence (objectness × class score) of a kept box."""
    iou_thres: float = 0.45
    """NMS IoU threshold."""
    max_det: int = 300
    """Boxes kept per image."""
    imgsz: int | None = None
    """Letterbox size; default: the size the weights were trained at."""
    batch_size: int = 8
    """Frames per forward pass (1 for webcams and streams, whose frames arrive one at a time)."""
    classes: list[int] | None = None
    """Keep only these class indices."""
    save_images: bool = True
    """Draw the boxes into a copy of each image, and into an annotated video for each video."""
    save_txt: bool = False
    """labels/<stem>.txt: `class cx cy w h conf` per box, normalised, as YOLOv5's --save-txt --save-conf."""
    save_crop: bool = False
    """crops/<class>/<stem>.jpg: each box cut out of the original image."""
    line_width: int | None = None
    """Box line width in pixels; default: scaled to the image."""
    vid_stride: int = 1
    """Predict every n-th frame of a video or stream."""
    progress: bool | None = None
    """A progress bar on stderr; default: when stderr is a terminal and the log shows info lines (not --quiet)."""


@dataclass
class PredictSummary:
    images: int
    """Frames predicted: still images and video frames."""
    detections: int
    out: Path
    written: WrittenFiles
    unreadable: list[str] = field(default_factory=list)
    """What could not be read and why, one line each naming the file or frame; skipped, not fatal."""
    speed_ms: dict[str, float] = field(default_factory=dict)
    """Milliseconds per image of each stage (pre-process, inference, NMS)."""
    input_shape: tuple[int, ...] = ()
    """(B,3,S,S) of the largest batch."""
    interrupted: bool = False

    @property
    def predictions_json(self) -> Path | None:
        return self.written.predictions_json

    @property
    def images_json(self) -> Path | None:
        return self.written.images_json

    def speed_line(self) -> str:
        times = ", ".join(f"{self.speed_ms.get(stage, 0.0):.1f} ms {stage}" for stage in STAGES)
        return f"Speed: {times} per image at shape {self.input_shape}"


class StageTimes:
    """Wall time per stage; on a GPU each stage ends with a synchronize, so the time is the stage's own."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] += time.perf_counter() - started

    def per_image_ms(self, images: int) -> dict[str, float]:
        return {name: 1000 * total / max(images, 1) for name, total in self.seconds.items()}


def predict(
    weights: str | os.PathLike | LoadedWeights,
    source: str | int | os.PathLike,
    out: str | os.PathLike,
    settings: PredictSettings | None = None,
    device: str | torch.device = "cpu",
) -> PredictSummary:
    """Detect on every frame of `source` and write the outputs predict_outputs.py lists into `out`.

    `weights` is a weights file or an already loaded one. Frames that cannot be read are counted in the summary and
    skipped. A webcam or stream runs until it ends or Ctrl-C, which finishes the outputs written so far. Raises
    `SourceError` (a UsageError) for a source that names nothing readable, and `NothingReadableError` when no frame
    could be read; nothing is written then.
    """
    settings = settings or PredictSettings()
    frames = Source(source, vid_stride=settings.vid_stride)  # a bad --source fails before the weights load
    device = torch.device(device)
    loaded = weights if isinstance(weights, LoadedWeights) else load_weights(weights, device=device)
    model = loaded.model.to(device).eval()
    imgsz = settings.imgsz or loaded.imgsz
    stride = int(model.stride.max())
    if imgsz % stride:
        raise UsageError(f"--imgsz {imgsz} must be a multiple of the model's largest stride {stride}")
    if settings.classes and not all(0 <= c < len(loaded.names) for c in settings.classes):
        raise UsageError(f"--classes {settings.classes}: the model has classes 0..{len(loaded.names) - 1}")

    options = OutputOptions(draw=settings.save_images, save_txt=settings.save_txt, save_crop=settings.save_crop,
                            line_width=settings.line_width, vid_stride=settings.vid_stride)
    writer = PredictionWriter(Path(out), loaded.names, options, loaded.meta.get("extra", {}).get("category_ids"))
    times = StageTimes(device)
    unreadable: list[str] = []
    predicted, detections, shape, interrupted = 0, 0, (), False
    progress = _progress_bar(frames, settings.progress)
    batch_size = 1 if frames.live else settings.batch_size
    try:
        for chunk in _chunks(frames, batch_size):
            progress.update(len(chunk))
            readable = [f for f in chunk if f.image is not None]
            unreadable += [f.error or f"{f.origin}: unreadable" for f in chunk if f.image is None]
            if not readable:
                continue
            rows, shape = _predict_chunk(model, readable, imgsz, settings, device, times, shape)
            for frame in readable:
                mine = rows[rows[:, 0] == frame.image_id]  # (n,7)
                writer.add(frame, mine)
                detections += len(mine)
            predicted += len(readable)
    except KeyboardInterrupt:  # a live source runs until stopped: keep what was predicted so far
        interrupted = True
    finally:
        progress.close()
        written = writer.close()
    if predicted == 0 and not interrupted:
        what = "; ".join(unreadable[:5]) + (f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        raise NothingReadableError(f"--source {source}: nothing could be read" + (f" ({what})" if what else ""))
    return PredictSummary(images=predicted, detections=detections, out=Path(out), written=written,
                          unreadable=unreadable, speed_ms=times.per_image_ms(predicted), input_shape=shape,
                          interrupted=interrupted)


def _predict_chunk(model, frames: list[Frame], imgsz: int, settings: PredictSettings, device: torch.device,
                   times: StageTimes, shape: tuple) -> tuple[np.ndarray, tuple]:
    """(n,7) [image_id, x, y, w, h, score, cls] rows of one batch, in each frame's original pixels."""
    from yolotr.data.batch import build_val_images

    with times.stage("pre-process"):
        # The val stream's letterbox, so that predict sees exactly what validation sees.
        images, _, ratio_pad = build_val_images([_as_sample(f) for f in frames], size=imgsz)  # (B,3,S,S) uint8
        x = network_input(images, device)
    with times.stage("inference"):
        decoded = decoded_predictions(model, x)  # (B,N,5+nc)
    with times.stage("NMS"):
        predictions = non_max_suppression(decoded, conf_thres=settings.conf_thres, iou_thres=settings.iou_thres,
                                          max_det=settings.max_det, classes=settings.classes)
    orig_sizes = [f.image.shape[:2] for f in frames]
    rows = detections_to_rows(predictions, [f.image_id for f in frames], ratio_pad, orig_sizes)  # (n,7)
    return rows, max(shape, tuple(x.shape))


def _chunks(items: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _as_sample(frame: Frame):
    """A DecodedSample without labels, the form the data stream's letterbox takes."""
    from yolotr.data.decode import DecodedSample
    from yolotr.data.labels import DetectionLabel

    height, width = frame.image.shape[:2]
    label = DetectionLabel(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), width, height, frame.name)
    return DecodedSample(key=frame.name, image=frame.image, label=label)


def _progress_bar(frames: Source, enabled: bool | None):
    from tqdm import tqdm

    from yolotr.log import progress_bar_wanted

    if enabled is None:
        enabled = progress_bar_wanted()
    return tqdm(total=frames.total_frames() if enabled else None, unit="frame", disable=not enabled,
                dynamic_ncols=True)
