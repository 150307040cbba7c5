"""`yolotr data export --format yolo --src data.yaml --out DIR`: a shard dataset as a YOLOv5 folder.

Writes OUT/images/{train,val}/<key>.<ext> (the stored image bytes, unchanged), OUT/labels/{train,val}/<key>.txt
(`class cx cy w h`, normalised) and OUT/data.yaml for YOLOv5's train.py and val.py. Used by benchmarks/parity/ so
that both trainers see the same images and boxes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yolotr import console


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--format", default="yolo", choices=("yolo",), help="output format (default %(default)s)")
    parser.add_argument("--src", required=True, type=Path, help="the shard dataset's data.yaml")
    parser.add_argument("--out", required=True, type=Path, help="output folder (empty, or an earlier export)")


def run(args: argparse.Namespace) -> int:
    from yolotr.data.export_yolo import export_yolo  # the shard reader imports torch: not for `--help`

    data_yaml, report = export_yolo(args.src, args.out)  # a DataSpecError is the CLI's to report (exit 2)
    console.result(f"{report.summary()}; data yaml: {data_yaml}")
    for key, reason in report.skipped[:20]:
        console.result(f"  skipped {key}: {reason}")
    return 0
