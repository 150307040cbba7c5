"""`yolotr data shard --format yolo|coco --src PATH --out DIR [--samples-per-shard N | --shard-bytes B]`

Writes OUT/<split>/shard-NNNNNN.tar + OUT/<split>/index.json per split, OUT/data.yaml, and OUT/report.json listing
every excluded sample with its reason. Same input, same bytes. OUT may be a URL (s3://bucket/prefix, gs://...):
the dataset is written and verified in a local temporary folder, then uploaded, each index after its shards.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from yolotr import console


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--format", required=True, choices=("yolo", "coco"), help="source dataset format")
    parser.add_argument("--src", required=True, type=Path,
                        help="yolo: the YOLOv5 data.yaml; coco: an instances json or a folder with annotations/")
    parser.add_argument("--out", required=True, help="output folder, or a URL (s3://bucket/prefix) to upload to")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--samples-per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    size.add_argument("--shard-bytes", type=int, default=None, help="start a new shard after this many bytes")
    parser.add_argument("--images", type=Path, default=None,
                        help="coco: folder the json's file_name entries are relative to (default: COCO's layout)")


def run(args: argparse.Namespace) -> int:
    from yolotr.data.convert_dataset import REPORT_FILE, convert
    from yolotr.log import progress_bar_wanted

    from yolotr.data.remote.location import check_supported, is_url

    if not is_url(args.out):
        out = Path(args.out)
        report = convert(args.format, args.src, out, samples_per_shard=args.samples_per_shard,
                         shard_bytes=args.shard_bytes, images_dir=args.images, progress=progress_bar_wanted())
        console.result(report.summary())
        console.result(f"wrote {out / 'data.yaml'} and {out / REPORT_FILE}")
        return 0
    from yolotr.data.remote.upload import upload_dataset

    check_supported(args.out, where="--out")  # before the conversion, which may take long
    url = args.out.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="yolotr-shard-") as staging:
        report = convert(args.format, args.src, Path(staging), samples_per_shard=args.samples_per_shard,
                         shard_bytes=args.shard_bytes, images_dir=args.images, progress=progress_bar_wanted())
        console.result(report.summary())
        upload_dataset(Path(staging), url)
    console.result(f"uploaded {url}/data.yaml and {url}/{REPORT_FILE}")
    return 0
