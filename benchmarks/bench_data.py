"""Train-stream throughput with mosaic at 640, beside a plain folder loader over the same JPEGs, and RSS over a long
stream.

Both loaders apply the same augmentations (yolotr.data.augment: mosaic + affine + HSV + flip at 640) and collate
into one uint8 batch; they differ in the data path, which is what this measures:

* stream: TrainStream over shards (index seeks, torchvision's libjpeg-turbo decode, each image decoded once per batch
  and reused as mosaic partner of the other images of the batch);
* folder: a map-style Dataset over the image files that, like YOLOv5's loader, reads and decodes (with PIL) the
  primary image and 3 random partners for every mosaic.

Rounds interleave the two loaders, order alternating, so load from other processes hits both alike; the ratio is
the median over rounds of back-to-back pairs. CPU-ms/image counts the training process and its DataLoader workers.

    OMP_NUM_THREADS=1 python benchmarks/bench_data.py [--images 256] [--repeat 4] [--rounds 3] [--rss-seconds 60]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from yolotr.config.augment import AugmentConfig  # noqa: E402
from yolotr.data.augment import augment_into  # noqa: E402
from yolotr.data.augment_plan import sample_rng  # noqa: E402
from yolotr.data.batch import allocate_images, targets_tensor  # noqa: E402
from yolotr.data.convert_dataset import convert  # noqa: E402
from yolotr.data.convert_yolo import read_yolo_label  # noqa: E402
from yolotr.data.decode import DecodedSample, decode_image  # noqa: E402
from yolotr.data.labels import DetectionLabel  # noqa: E402
from yolotr.data.spec import load_data_yaml  # noqa: E402
from yolotr.data.stream import TrainStream  # noqa: E402
from yolotr.data.synth import render_image  # noqa: E402

IMGSZ = 640
BATCH = 16
# YOLOv5's mosaic loader on this kind of machine (2 cores), images/s, as quoted in the issue.
YOLOV5_REFERENCE = {0: 27.5, 2: 39.0}


def write_yolo_folder(root: Path, count: int, repeat: int) -> Path:
    """count JPEGs of ~640x480 (synthetic shapes on textured backgrounds) with YOLO labels, and a data.yaml whose
    train list names each image `repeat` times (long epochs without rendering more images)."""
    for split, n in (("train", count), ("val", 4)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            rng = np.random.default_rng([7, i, split == "val"])
            image, boxes, classes = render_image(rng, classes=4, imgsz=IMGSZ)
            height, width = image.shape[:2]
            cv2.imwrite(str(root / "images" / split / f"{i:05d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            rows = [f"{c} {(b[0] + b[2]) / 2 / width:.6f} {(b[1] + b[3]) / 2 / height:.6f} "
                    f"{(b[2] - b[0]) / width:.6f} {(b[3] - b[1]) / height:.6f}" for b, c in zip(boxes, classes)]
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(rows) + "\n")
    images = sorted((root / "images" / "train").glob("*.jpg"))
    (root / "train.txt").write_text("".join(f"{p}\n" for p in images * repeat))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": ".", "train": "train.txt", "val": "images/val",
                                         "names": ["circle", "square", "triangle", "cross"]}))
    return data_yaml


class FolderMosaicDataset(Dataset):
    """The plain loader: per item, open and decode (PIL) the image and 3 random partners, then the same mosaic."""

    def __init__(self, images: list[Path], config: AugmentConfig) -> None:
        self.images = images
        self.config = config

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> DecodedSample:
        path = self.images[index]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))  # (H, W, 3)
        height, width = pixels.shape[:2]
        boxes, classes = read_yolo_label(Path(str(path).replace("/images/", "/labels/")).with_suffix(".txt"),
                                         width, height)
        label = DetectionLabel(boxes=boxes, classes=classes.astype(np.int64), width=width, height=height, source="")
        return DecodedSample(key=path.stem, image=pixels, label=label)

    def __getitem__(self, index: int):
        primary = self.load(index)
        partners = [self.load(i) for i in random.choices(range(len(self)), k=3)]
        out = np.full((IMGSZ, IMGSZ, 3), 114, dtype=np.uint8)
        boxes = augment_into(out, primary, partners, sample_rng(0, 0, primary.key), self.config)
        return out, boxes


def collate_folder(items):
    images = allocate_images(len(items), IMGSZ)  # (B, S, S, 3)
    for i, (image, _) in enumerate(items):
        images[i] = torch.from_numpy(image)
    return images.permute(0, 3, 1, 2), targets_tensor([boxes for _, boxes in items], IMGSZ)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(make_batches) -> tuple[float, float]:
    """(images/s, CPU-ms/image) over one pass; workers are started and joined inside the pass."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    images = sum(int(images.shape[0]) for images in make_batches())
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return images / wall, 1000 * cpu / images


def stream_pass(split, workers: int):
    def batches():
        stream = TrainStream(split, global_batch_size=BATCH, rank=0, world_size=1, seed=0, imgsz=IMGSZ,
                             augment=AugmentConfig(), num_workers=workers)
        for batch in stream:
            yield batch.images

    return batches


def folder_pass(dataset: FolderMosaicDataset, workers: int):
    def batches():
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                            collate_fn=collate_folder)
        for images, _ in loader:
            yield images

    return batches


def decode_cost_ms(jpegs: list[Path]) -> float:
    data = [p.read_bytes() for p in jpegs]
    start = time.process_time()
    for encoded in data:
        decode_image(encoded, "jpg")
    return 1000 * (time.process_time() - start) / len(data)


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS of the process, PSS of the process and all its descendants) in MB, from /proc. PSS splits pages shared
    between the training process and its forked workers, so the sum does not count them twice."""

    def field(path: Path, name: str) -> int:
        return int(next(line.split()[1] for line in path.read_text().splitlines() if line.startswith(name)))

    rss = field(Path(f"/proc/{pid}/status"), "VmRSS:")
    pss, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            pss += field(Path(f"/proc/{current}/smaps_rollup"), "Pss:")
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return rss / 1024, pss / 1024


def memory_over_long_stream(split, seconds: float, workers: int) -> list[tuple[float, int, float, float]]:
    """(elapsed s, images, RSS MB, PSS MB) samples while streaming epoch after epoch for `seconds`."""
    stream = TrainStream(split, global_batch_size=BATCH, rank=0, world_size=1, seed=0, imgsz=IMGSZ,
                         augment=AugmentConfig(), num_workers=workers)
    start, samples, images, next_sample = time.perf_counter(), [], 0, 0.0
    while time.perf_counter() - start < seconds:
        iterator = iter(stream)
        for batch in iterator:
            images += len(batch.keys)
            elapsed = time.perf_counter() - start
            if elapsed >= next_sample:
                samples.append((elapsed, images, *memory_mb(os.getpid())))
                next_sample += seconds / 10
            if elapsed >= seconds:
                break
        iterator.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="distinct JPEGs of ~640x480 (default 256)")
    parser.add_argument("--repeat", type=int, default=4,
                        help="each JPEG appears this often per epoch (default 4: 64 batches, so that starting the "
                             "workers of each epoch does not dominate)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per worker count (default 3)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rss-seconds", type=float, default=60.0, help="length of the long stream (default 60)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_yaml = write_yolo_folder(tmp / "folder", args.images, args.repeat)
        convert("yolo", data_yaml, tmp / "shards", samples_per_shard=32)
        split = load_data_yaml(tmp / "shards" / "data.yaml").train
        jpegs = sorted((tmp / "folder" / "images" / "train").glob("*.jpg"))
        folder = FolderMosaicDataset(jpegs * args.repeat, AugmentConfig())
        print(f"{len(jpegs)} JPEGs of ~640x480, each {args.repeat}x per epoch ({split.num_samples} samples), batch "
              f"{BATCH}, mosaic at {IMGSZ}, torch threads {torch.get_num_threads()}, {os.cpu_count()} cores; "
              f"JPEG decode alone: {decode_cost_ms(jpegs):.2f} CPU-ms/image\n")

        rows = []
        for workers in args.workers:
            results = {"stream": [], "folder": []}
            for round_number in range(args.rounds):
                order = ["stream", "folder"] if round_number % 2 == 0 else ["folder", "stream"]
                for name in order:
                    make = stream_pass(split, workers) if name == "stream" else folder_pass(folder, workers)
                    results[name].append(measure(make))
            ratio = statistics.median(s[0] / f[0] for s, f in zip(results["stream"], results["folder"]))
            for name in ("stream", "folder"):
                rate = statistics.median(r[0] for r in results[name])
                cpu = statistics.median(r[1] for r in results[name])
                reference = YOLOV5_REFERENCE.get(workers)
                rows.append((name, workers, rate, cpu, ratio if name == "stream" else 1.0,
                             f"{rate / reference:.1f}x" if reference and name == "stream" else ""))

        print("| loader | workers | images/s | CPU-ms/image | vs folder loader | vs YOLOv5's loader (quoted) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, workers, rate, cpu, ratio, reference in rows:
            print(f"| {name} | {workers} | {rate:.1f} | {cpu:.1f} | {ratio:.2f}x | {reference} |")

        for workers in (0, 2):
            print(f"\nMemory over a {args.rss_seconds:.0f} s stream, {workers} workers (epoch after epoch; workers "
                  f"restart each epoch, the training process lives on):\n")
            samples = memory_over_long_stream(split, args.rss_seconds, workers)
            print("| elapsed s | images | RSS MB (training process) | PSS MB (with workers) |")
            print("|---:|---:|---:|---:|")
            for elapsed, images, rss, pss in samples:
                print(f"| {elapsed:.0f} | {images} | {rss:.0f} | {pss:.0f} |")
            half = len(samples) // 2
            first, second = max(s[2] for s in samples[:half]), max(s[2] for s in samples[half:])
            print(f"\npeak training-process RSS: {first:.0f} MB in the first half, {second:.0f} MB in the second "
                  f"({second - first:+.0f} MB; a leak would keep raising the peak)")

if __name__ == "__main__":
    main()
