"""Validation during training, the best weights, and the run's plots: a hook (engine/hooks.py).

The EMA weights are validated every `val.every_epochs` epochs and after the last step; every rank predicts its share
of the val split and rank 0 scores it (eval/validator.py). A validation of an epoch saves a checkpoint carrying its
fitness, and a better fitness exports `weights/best.safetensors`. A run stopped for divergence validates its last
(guarded, finite) weights too. An epoch whose validation was due when a preemption
stopped the run is validated after the resume (the pending epoch is part of the trainer's checkpointed state).
"""

from __future__ import annotations

import json
import logging

from yolotr.data.coco_gt import coco_ground_truth
from yolotr.data.val_stream import ValStream
from yolotr.engine.hooks import HookBase
from yolotr.errors import EXIT_DIVERGED, StorageError
from yolotr.eval.plots.labels import plot_labels
from yolotr.eval.plots.mosaics import plot_train_batch, plot_val_predictions
from yolotr.eval.plots.results import plot_results
from yolotr.eval.plots.run import plot_validation
from yolotr.eval.validator import predict_batch, validate
from yolotr.track.fitness import fitness

log = logging.getLogger(__name__)


def val_line(epoch: int, summary: dict, final: bool) -> str:
    """The console's row of a validation, with YOLOv5's columns: `val epoch 4: P 0.612 R 0.540 mAP50 ...`."""
    instances = sum(summary.get("per_class_instances", {}).values())
    return (f"val epoch {epoch}{' (final)' if final else ''}: P {summary['precision']:.3f}  R {summary['recall']:.3f}  "
            f"mAP50 {summary['map50']:.3f}  mAP50-95 {summary['map']:.3f}  "
            f"({summary.get('n_images', 0)} images, {instances} instances)")


class EvalHook(HookBase):
    def __init__(self) -> None:
        self._ground_truth: dict | None = None
        self._row_step: int | None = None  # the step of the last row on the console

    def before_train(self) -> None:
        if self.trainer.val_pending is not None:  # preempted at the end of an epoch, before validating it
            self._validate_pending()

    def after_epoch(self, epoch: int) -> None:
        every = self.trainer.cfg.val.every_epochs
        if every > 0 and (epoch + 1) % every == 0:
            self.trainer.val_pending = epoch  # checkpointed: a preemption now validates after the resume

    def after_step(self) -> None:
        t = self.trainer
        if t.step == t.cfg.train.log_every and t.runtime.is_main:
            self._written(t.run_dir, self._plot_first_batch)
        if t.val_pending is not None:
            self._validate_pending()

    def after_train(self) -> None:
        self.validate(self.trainer.epoch, final=True)

    def on_stop(self, code: int) -> None:
        t = self.trainer
        if code == EXIT_DIVERGED:  # the last (guarded, finite) weights: the summary and the study show where it stopped
            self.validate(t.epoch, final=True)
        if t.runtime.is_main:
            results = t.run_dir / "results.png"
            try:
                plot_results(t.run_dir / "metrics.jsonl", results)
            except OSError as error:  # the plotting library's own error names no file
                raise StorageError.writing(results, error) or error from None

    # ------------------------------------------------------------------------------------------------------------
    def _validate_pending(self) -> None:
        assert self.trainer.val_pending is not None  # called only when a validation is pending
        self.validate(self.trainer.val_pending)
        self.trainer.val_pending = None

    def validate(self, epoch: int, final: bool = False) -> None:
        t = self.trainer
        t.sync_buffers()  # every rank validates its shard with the same BatchNorm statistics
        names = list(t.data.names)
        assert t.data.val is not None  # the hook is made only for data with a val split
        if self._ground_truth is None:
            self._ground_truth = coco_ground_truth(t.data.val, names)
        stream = ValStream(t.data.val, rank=t.runtime.rank, world_size=t.runtime.world_size,
                           batch_size=t.cfg.val.batch_size, imgsz=t.cfg.train.imgsz)
        model = t.ema.module if t.ema is not None else t.model
        result = validate(model, stream, self._ground_truth, names, device=t.device, conf_thres=t.cfg.val.conf_thres,
                          iou_thres=t.cfg.val.iou_thres, max_det=t.cfg.val.max_det)
        score = fitness(result)
        improved = t.best_fitness is None or score > t.best_fitness
        if improved:
            t.best_fitness = score
        if t.runtime.is_main:
            summary = {k: v for k, v in result.summary().items() if k not in ("kind", "time")}
            t.logger.log("val", step=t.step, epoch=epoch, final=final, fitness=score, **summary)
            if self._row_step != t.step:  # the final validation of the weights just validated says the same
                log.info(val_line(epoch, summary, final))
                self._row_step = t.step
            val_last = t.run_dir / "val_last.json"
            self._written(val_last, val_last.write_text, json.dumps(result.to_dict()))
            self._written(t.run_dir, self._plot_val, stream, model, result)
        if not final:
            t.save_checkpoint(fitness=score)
        if improved:
            self._written(t.run_dir / "weights" / "best.safetensors", t.export_weights,
                          t.run_dir / "weights" / "best.safetensors")

    def _written(self, path, write, *args) -> None:
        """`write(*args)` writes `path` (or files in it) on rank 0 alone. A full or read-only disk stops the run at the
        next step, on every rank, with exit 74 (Trainer.storage_failed): raised here, it would stop rank 0 alone and
        leave the others waiting for it."""
        try:
            write(*args)
        except StorageError as error:
            self.trainer.storage_failed(error)
        except OSError as error:
            storage = StorageError.writing(error.filename or path, error)
            if storage is None:
                raise
            self.trainer.storage_failed(storage)

    def _plot_first_batch(self) -> None:
        t = self.trainer
        if t.first_batch is None:
            return
        names = list(t.data.names)
        plot_train_batch(t.first_batch.images, t.first_batch.targets, names, t.run_dir / "train_batch0.jpg")
        plot_labels(t.data.train, names, t.run_dir / "labels.jpg")  # the set's boxes, not the first batch's

    def _plot_val(self, stream, model, result) -> None:
        t = self.trainer
        names = list(t.data.names)
        plot_validation(result, t.run_dir)  # PR, F1, P and R curves, and the confusion matrix
        plot_results(t.run_dir / "metrics.jsonl", t.run_dir / "results.png")
        batch = next(iter(stream), None)
        if batch is None:
            return
        preds = predict_batch(model, batch.images, device=t.device, conf_thres=0.25, iou_thres=0.45, max_det=300,
                              multi_label=False)
        plot_val_predictions(batch.images, preds, batch.targets, names, t.run_dir / "val_pred.jpg")
        t.logger.log_images(batch.images, preds, batch.targets, names, step=t.step)
