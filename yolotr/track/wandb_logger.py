"""Weights & Biases logging for rank 0: offline unless an API key is configured, resumable by run id.

Offline runs write a new `run_dir/wandb/offline-run-*-<id>` folder per process, so a resumed run passes
the id stored in its checkpoint and explicit `step=` values; `wandb sync` then merges the folders.
"""

from __future__ import annotations

import logging
import netrc
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from yolotr.data.boxes import targets_of_image
from yolotr.track.record_fields import record_scalars
from yolotr.track.wandb_reader import wait_until_complete

DEFAULT_WANDB_HOST = "https://api.wandb.ai"
# wandb.Image boxes beyond this many per image make the media panel unreadable and the files large.
MAX_BOXES_PER_IMAGE = 100

log = logging.getLogger(__name__)


def wandb_wanted(enabled: bool | str, environ: Mapping[str, str] | None = None) -> bool:
    """wandb.enabled: true or false as given; auto only where the user set W&B up (an API key, a `wandb login`
    netrc entry, or an explicit WANDB_MODE), so that a plain run neither writes W&B files nor prints W&B's lines."""
    if enabled != "auto":
        return bool(enabled)
    environ = os.environ if environ is None else environ
    return bool(environ.get("WANDB_MODE", "").strip() or environ.get("WANDB_API_KEY")) or _netrc_has_host(environ)


def wandb_mode(environ: Mapping[str, str] | None = None) -> str:
    """The W&B mode to use: `WANDB_MODE` when set, else online with an API key, offline without.

    An API key is configured when `WANDB_API_KEY` is set or the netrc file (`NETRC` or ~/.netrc) has
    an entry for the W&B host (`WANDB_BASE_URL`). The key itself is never read here, only its presence.
    """
    environ = os.environ if environ is None else environ
    mode = environ.get("WANDB_MODE", "").strip().lower()
    if mode:
        return {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled"
    if environ.get("WANDB_API_KEY"):
        return "online"
    return "online" if _netrc_has_host(environ) else "offline"


def _netrc_has_host(environ: Mapping[str, str]) -> bool:
    host = urlparse(environ.get("WANDB_BASE_URL", DEFAULT_WANDB_HOST)).hostname
    path = Path(environ.get("NETRC") or Path(environ.get("HOME", Path.home())) / ".netrc")
    try:
        return path.is_file() and netrc.netrc(str(path)).authenticators(host or "") is not None
    except (netrc.NetrcParseError, OSError):
        return False


class WandbLogger:
    """A W&B run under `run_dir/wandb/`; every method is a no-op when logging is disabled."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: dict[str, Any],
        run_id: str | None,
        enabled: bool | str,
        project: str = "yolotr",
        name: str | None = None,
        resumed_at: int | None = None,
    ) -> None:
        """`run_id`: the W&B run to continue (None: a new one). `resumed_at`: the step of the checkpoint a resumed
        start continues from: the run is rewound to it (W&B's `resume_from`), since what an earlier start logged
        after it is training the run threw away (metrics.jsonl supersedes those records too), and W&B would keep
        those rows and ignore the resumed run's, a lower step than the one it has."""
        self.mode = wandb_mode() if wandb_wanted(enabled) else "disabled"
        if int(os.environ.get("RANK", "0")) != 0:
            self.mode = "disabled"  # one W&B run per training: a run per rank would duplicate every chart
        self.run_id = run_id
        self._run = None
        self._step = 0  # the highest step logged: W&B drops a row below it
        self._events_in_row: tuple[int, dict[str, int]] = (0, {})  # events logged in the row of that step, by name
        if self.mode == "disabled":
            return
        import wandb  # imported only when logging: it is slow to import and spawns a service

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # silent: W&B's own banner, warnings and end-of-run tables stay off the console; the line below says where
        # the run went, and its files and metrics.jsonl hold the rest.
        init = dict(project=project, name=name, dir=str(run_dir), config=config, settings=wandb.Settings(silent=True))
        plain = dict(id=run_id, resume="allow")
        rewind = dict(resume_from=f"{run_id}?_step={int(resumed_at)}") if run_id and resumed_at is not None else None
        # Offline, the rewind is recorded in the run's file and done by `wandb sync`. Online, a server that cannot
        # rewind (an old server, a run never synced) still gets the run continued, and an unreachable one the files.
        attempts = [(self.mode, rewind or plain)]
        if self.mode == "online":
            attempts = [("online", rewind)] * (rewind is not None) + [("online", plain), ("offline", rewind or plain)]
        for attempt, (mode, how) in enumerate(attempts):
            try:
                self._run = wandb.init(mode=mode, **init, **how)
                self.mode = mode
                break
            except Exception as error:  # noqa: BLE001 - an unreachable server must not stop training
                if attempt == len(attempts) - 1:
                    raise
                next_mode, next_how = attempts[attempt + 1]
                what = f"rewinding run {run_id} to step {resumed_at}" if how is rewind else "init"
                lost = rewind is not None and next_how is not rewind
                then = f" without the rewind (the rows after step {resumed_at} stay)" if lost else ""
                warnings.warn(f"W&B {mode} {what} failed ({error}); trying {next_mode}{then}", stacklevel=2)
        self.run_id = self._run.id
        log.info("W&B: %s", self.where())

    def where(self) -> str:
        """Where the run's W&B data goes: its page online, its folder and the sync command offline."""
        if self._run is None:
            return "off"
        if self.mode == "online":
            return f"online run {self._run.url}"
        folder = Path(self._run.settings.sync_file).parent
        return f"offline run in {folder} (upload with: wandb sync {folder})"

    @property
    def active(self) -> bool:
        return self._run is not None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Log `metrics` at global step `step` (explicit, so resumed runs continue the same axis)."""
        if self._run is not None:
            self._step = max(self._step, int(step))
            self._run.log(metrics, step=int(step))

    def log_record(self, record: Mapping[str, Any]) -> None:
        """Log a metrics.jsonl record (as returned by `MetricsWriter.write`) under `<kind>/<field>` keys
        (track/record_fields.py); events log `event/<name>` = how many of them the row holds (1, mostly) and
        `event/<name>/step`, the step the newest of them is about.

        An event can arrive after later steps were logged (a checkpoint is committed by its writer while training
        goes on): it is then logged at the current step, since W&B ignores a row below the step it has reached. W&B
        keeps one row per step, so two such events reaching the same row are counted there (metrics.jsonl has both).
        """
        if self._run is None:
            return
        kind, step = record.get("kind"), record.get("step")
        if step is None:
            raise ValueError(f"metrics record {dict(record)!r} has no 'step' to log it at")
        if kind == "event":
            name, at = record.get("event", "unknown"), max(int(step), self._step)
            row_step, counts = self._events_in_row
            counts = counts if row_step == at else {}
            counts[name] = counts.get(name, 0) + 1
            self._events_in_row = (at, counts)
            self.log({f"event/{name}": counts[name], f"event/{name}/step": int(step)}, step=at)
            return
        metrics = record_scalars(record)
        if metrics:
            self.log(metrics, step=step)

    def log_images(
        self,
        images: torch.Tensor,
        predictions: Sequence[torch.Tensor],
        targets: torch.Tensor,
        names: Sequence[str],
        step: int,
        key: str = "val/predictions",
        max_images: int = 8,
    ) -> None:
        """Log val images with predicted and ground-truth boxes as `wandb.Image`s.

        images: uint8 (B,3,H,W); predictions: per image (n,6) x1,y1,x2,y2,conf,cls in the images' pixels;
        targets: (N,6) [img_idx, cls, cx, cy, w, h] normalised to the images.
        """
        if self._run is None:
            return
        import wandb

        class_labels = {i: name for i, name in enumerate(names)}
        logged = []
        for index in range(min(len(images), max_images)):
            image = images[index].detach().cpu()
            height, width = image.shape[-2:]
            pred = predictions[index].detach().cpu().float()
            pred = pred[pred[:, 4].argsort(descending=True)][:MAX_BOXES_PER_IMAGE]
            pred_boxes = [
                _box(box, int(cls), f"{names[int(cls)]} {conf:.2f}", {"conf": float(conf)})
                for *box, conf, cls in pred.tolist()
            ]
            gt_classes, gt_xyxy = targets_of_image(targets, index, height, width)
            gt_boxes = [_box(box, cls, names[cls], None) for box, cls in zip(gt_xyxy.tolist(), gt_classes.tolist())]
            boxes = {
                "predictions": {"box_data": pred_boxes, "class_labels": class_labels},
                "ground_truth": {"box_data": gt_boxes, "class_labels": class_labels},
            }
            # (3,H,W) → (H,W,3) for wandb.Image
            logged.append(wandb.Image(image.permute(1, 2, 0).numpy(), boxes=boxes))
        self.log({key: logged}, step=step)

    def set_summary(self, **values: Any) -> None:
        """Values shown in the run table (e.g. the best mAP), overriding the last logged ones."""
        if self._run is not None:
            for key, value in values.items():
                self._run.summary[key] = value

    def finish(self, timeout_s: float = 30.0) -> None:
        """End the run and wait until its `.wandb` file is complete.

        wandb 0.31's core service may still be writing the file when `Run.finish()` returns; a process
        that exits right away (the end of training) could then lose the tail of the run.
        """
        if self._run is None:
            return
        wandb_file = Path(self._run.settings.sync_file)
        self._run.finish()
        self._run = None
        if not wait_until_complete(wandb_file, timeout_s):
            warnings.warn(f"{wandb_file} was not complete {timeout_s:.0f} s after the run finished", stacklevel=2)


def _box(xyxy: Sequence[float], class_id: int, caption: str, scores: dict[str, float] | None) -> dict[str, Any]:
    x1, y1, x2, y2 = xyxy
    box: dict[str, Any] = {
        "position": {"minX": x1, "minY": y1, "maxX": x2, "maxY": y2},
        "domain": "pixel",
        "class_id": class_id,
        "box_caption": caption,
    }
    if scores is not None:
        box["scores"] = scores
    return box
