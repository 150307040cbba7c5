"""Images/s of the training augmentation's two data paths, decode included, at 320 and 640 px (issue 18):

* cpu: what one DataLoader worker does per batch: decode.py (libjpeg-turbo) per image, then augment_into (OpenCV:
  mosaic with the batch's other images as partners, affine, flip, HSV). One process; the trainer runs
  `train.num_workers` such workers per rank (default 2), so its loader rate is up to that many times this one.
* device: the batch's JPEGs decoded in one call on --device (nvJPEG on a GPU, device_decode), the same plans
  (augment_plan) rendered there (device_augment): what `train.augment_on: device` does in the training process.

Both start from JPEG bytes in memory (reading the shards is not measured) of the synthetic set's images, drawn at
--source-size px, with YOLOv5's default augmentations. The device path is timed to a synchronised end.

    python benchmarks/loader_speed.py --device cuda [--sizes 320 640] [--batch 64] [--batches 8] [--images 128]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment_plan import plan_augmentation, sample_rng
from yolotr.data.batch import build_train_images
from yolotr.data.decode import DecodedSample, decode_image
from yolotr.data.device_augment import render_plans
from yolotr.data.device_decode import EncodedImage, decode_batch
from yolotr.data.shard_writer import SampleRecord
from yolotr.data.synth import synthetic_sample


def cpu_batch(records: list[SampleRecord], size: int, config: AugmentConfig, epoch: int) -> torch.Tensor:
    samples = [DecodedSample(key=r.key, image=decode_image(r.image, r.image_ext), label=r.label) for r in records]
    images, _ = build_train_images(samples, size=size, augment=config, seed=0, epoch=epoch)
    return images


def device_batch(records: list[SampleRecord], size: int, config: AugmentConfig, epoch: int,
                 device: torch.device) -> torch.Tensor:
    decoded = decode_batch([EncodedImage(r.key, r.image, r.image_ext) for r in records], device)
    # The batch's other samples are the mosaic partners, as build_train_images draws them (mosaic_partners: batch).
    plans = [plan_augmentation(r, records[:i] + records[i + 1:], sample_rng(0, epoch, r.key), config, size)
             for i, r in enumerate(records)]
    return render_plans(plans, decoded.images)


def images_per_second(build, batches: list[list[SampleRecord]], device: torch.device) -> float:
    build(batches[0], epoch=0)  # warm-up: allocator, nvJPEG handles, first-call costs
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for epoch, batch in enumerate(batches):
        build(batch, epoch=epoch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640], help="output sizes (default 320 640)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per path and size (default 8)")
    parser.add_argument("--images", type=int, default=128, help="distinct synthetic JPEGs, reused (default 128)")
    parser.add_argument("--source-size", type=int, default=640, help="long side of the JPEGs (default 640)")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = AugmentConfig()
    records = [synthetic_sample("train", i, classes=4, imgsz=args.source_size, seed=0) for i in range(args.images)]
    batches = [[records[(b * args.batch + j) % len(records)] for j in range(args.batch)] for b in range(args.batches)]

    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", batch {args.batch}, {args.batches} batches, JPEGs of {args.source_size} px, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'size':>5} {'cpu img/s (1 process)':>22} {'device img/s':>13} {'device/cpu':>11}")
    for size in args.sizes:
        cpu = images_per_second(partial(cpu_batch, size=size, config=config), batches, torch.device("cpu"))
        dev = images_per_second(partial(device_batch, size=size, config=config, device=device), batches, device)
        print(f"{size:>5} {cpu:>22.1f} {dev:>13.1f} {dev / cpu:>11.2f}")
    print("cpu: one process; the trainer runs train.num_workers DataLoader workers per rank, each at about this rate")


if __name__ == "__main__":
    main()
