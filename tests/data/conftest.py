"""Fixtures of the data tests: real shards on disk, written by the project's own writers (or by hand where a test
needs a shard the writers would refuse to produce)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from yolotr.data.index import INDEX_FILE, SplitIndex, scan_shard, write_index
from yolotr.data.shard_writer import write_shards
from yolotr.data.synth import synthetic_samples


def _write_synth_split(directory: Path, count: int, *, samples_per_shard: int, imgsz: int = 64, classes: int = 3,
                       seed: int = 0) -> SplitIndex:
    samples = synthetic_samples("train", count, classes=classes, imgsz=imgsz, seed=seed)
    return write_shards(samples, directory, nc=classes, names=[f"c{i}" for i in range(classes)],
                        samples_per_shard=samples_per_shard)


@pytest.fixture
def synth_split(tmp_path) -> Callable[..., SplitIndex]:
    """make(count, samples_per_shard=…, imgsz=64, classes=3, seed=0) → a freshly written split in tmp_path."""
    made = []

    def make(count: int, *, samples_per_shard: int, **kwargs) -> SplitIndex:
        directory = tmp_path / f"split{len(made)}"
        made.append(directory)
        return _write_synth_split(directory, count, samples_per_shard=samples_per_shard, **kwargs)

    return make


@pytest.fixture(scope="session")
def split_100(tmp_path_factory) -> SplitIndex:
    """100 samples in 15 shards (14 of 7, one of 2): shard counts that divide nothing evenly. Read-only."""
    return _write_synth_split(tmp_path_factory.mktemp("split100"), 100, samples_per_shard=7)


@pytest.fixture
def raw_split(tmp_path) -> Callable[..., SplitIndex]:
    """make(samples, samples_per_shard, nc) writes hand-made samples ({"__key__": ..., ext: bytes}) as shards with
    webdataset's TarWriter and indexes them with scan_shard: for samples the validating writer would refuse."""

    def make(samples: list[dict], *, samples_per_shard: int = 100, nc: int = 3) -> SplitIndex:
        directory = tmp_path / "raw"
        directory.mkdir()
        files = []
        for first in range(0, len(samples), samples_per_shard):
            path = directory / f"shard-{len(files):06d}.tar"
            with wds.TarWriter(str(path), encoder=False, mtime=0) as writer:
                for sample in samples[first:first + samples_per_shard]:
                    writer.write(sample)
            files.append(path)
        index = SplitIndex(directory=directory, shards=[scan_shard(f) for f in files], nc=nc,
                           names=[f"c{i}" for i in range(nc)], index_file=str(directory / INDEX_FILE))
        write_index(index, directory / INDEX_FILE)
        return index

    return make


@pytest.fixture(scope="session")
def jpeg_bytes() -> Callable[[int, int], bytes]:
    """encode(width, height) → a valid JPEG of a grey image with a dark square."""
    import cv2

    def encode(width: int = 48, height: int = 40) -> bytes:
        image = np.full((height, width, 3), 150, dtype=np.uint8)
        image[5:20, 5:20] = 30
        return cv2.imencode(".jpg", image)[1].tobytes()

    return encode


def label_json(boxes: list, classes: list, width: int = 48, height: int = 40) -> bytes:
    return json.dumps({"boxes": boxes, "classes": classes, "width": width, "height": height,
                       "source": "test"}).encode()


@pytest.fixture(scope="session")
def make_label() -> Callable[..., bytes]:
    """make_label(boxes, classes, width=48, height=40) → label json bytes (no validation, NaN allowed)."""
    return label_json


@pytest.fixture(scope="session")
def textured_samples() -> list:
    """Five decoded samples of the synthetic set's kind (textured backgrounds, shapes, tight boxes), of different
    sizes and aspects, drawn straight from its renderer (no JPEG round trip). Read-only."""
    from yolotr.data.decode import DecodedSample
    from yolotr.data.labels import DetectionLabel
    from yolotr.data.synth import render_image

    samples = []
    for i, imgsz in enumerate([96, 80, 112, 72, 100]):
        image, boxes, classes = render_image(np.random.default_rng([7, i]), classes=4, imgsz=imgsz)
        label = DetectionLabel(boxes=boxes, classes=classes.astype(np.int64), width=image.shape[1],
                               height=image.shape[0], source="")
        samples.append(DecodedSample(key=f"tex{i}", image=image, label=label))
    return samples
