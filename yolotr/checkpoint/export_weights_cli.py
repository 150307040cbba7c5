"""`yolotr export-weights RUN|CKPT --out FILE`: one consolidated weights file from a run or a checkpoint.

The file (`.safetensors`, or a weights-only `.pt`) holds the model and its EMA, the model yaml, the class names and
the training config: what `yolotr val`, `predict` and `export` take. A run folder means its newest valid checkpoint.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from yolotr import console
from yolotr.errors import UsageError

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a run folder (its newest valid checkpoint) or a checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, help="output file (.safetensors or .pt)")


def resolve_checkpoint(source: Path) -> Path:
    from yolotr.checkpoint.manager import CheckpointManager, verify  # torch: not for `--help`

    if (source / "manifest.json").is_file():
        problem = verify(source)
        if problem:
            raise UsageError(f"{source}: {problem}")
        return source
    run_checkpoints = source / "checkpoints"
    if run_checkpoints.is_dir():
        manager = CheckpointManager(source, rank=0, world_size=1, keep_last=0)
        found, damaged = manager.newest_valid()
        for path, problem in damaged:
            log.warning(f"checkpoint {path} is damaged ({problem}); passed over")
        if found is not None:
            return found
    raise UsageError(f"{source}: neither a checkpoint folder (manifest.json) nor a run folder with a valid checkpoint")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, so that `yolotr --help` does not load torch.
    from yolotr.checkpoint.files import load_tensors, read_meta
    from yolotr.checkpoint.weights_file import save_weights
    from yolotr.model.yolo import DetectionModel

    checkpoint = resolve_checkpoint(args.source)
    meta = read_meta(checkpoint)
    model = DetectionModel(meta["model_yaml"])
    template = {"model": model.state_dict()}
    has_ema = meta["config"]["train"]["ema"]
    if has_ema:
        template["ema"] = DetectionModel(meta["model_yaml"]).state_dict()
    load_tensors(template, checkpoint)
    out = save_weights(
        args.out,
        model_state=template["model"],
        ema_state=template.get("ema"),
        model_yaml=meta["model_yaml"],
        names=meta["names"],
        imgsz=meta["imgsz"],
        extra={"step": meta["counters"]["step"], "config": meta["config"], "checkpoint": str(checkpoint)},
    )
    holds = "model + EMA" if has_ema else "model"
    console.result(f"wrote {out} (step {meta['counters']['step']}, {holds}, from {checkpoint})")
    return 0
