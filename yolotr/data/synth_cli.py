"""`yolotr data synth --out DIR [--train N] [--val M] [--classes K] [--imgsz S] [--seed X]`: the synthetic set."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from yolotr import console
from yolotr.data.synth import SHAPES, write_synthetic_dataset
from yolotr.errors import UsageError

_DEFAULTS = {name: p.default for name, p in inspect.signature(write_synthetic_dataset).parameters.items()}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Writes the synthetic detection set (shapes on textured backgrounds) as shards + data.yaml."
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--train", type=int, default=_DEFAULTS["train"], help="training images (default %(default)s)")
    parser.add_argument("--val", type=int, default=_DEFAULTS["val"], help="validation images (default %(default)s)")
    parser.add_argument("--classes", type=int, default=_DEFAULTS["classes"],
                        help=f"shape classes, the first K of {', '.join(SHAPES)} (default %(default)s)")
    parser.add_argument("--imgsz", type=int, default=_DEFAULTS["imgsz"], help="long image side (default %(default)s)")
    parser.add_argument("--seed", type=int, default=_DEFAULTS["seed"],
                        help="the same seed gives the same bytes (default %(default)s)")
    parser.add_argument("--samples-per-shard", type=int, default=_DEFAULTS["samples_per_shard"],
                        help="samples per shard (default %(default)s)")
    parser.add_argument("--workers", type=int, default=_DEFAULTS["workers"],
                        help="render in this many processes; the output is the same (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        data_yaml = write_synthetic_dataset(args.out, train=args.train, val=args.val, classes=args.classes,
                                            imgsz=args.imgsz, seed=args.seed, samples_per_shard=args.samples_per_shard,
                                            workers=args.workers)
    except ValueError as err:
        raise UsageError(str(err)) from err
    console.result(f"wrote {args.train} train and {args.val} val images of {args.classes} classes to {args.out}; "
          f"data yaml: {data_yaml}")
    return 0
