"""Training speed on one device (issue #18): per model and image size, the eager step beside the fast path
(channels-last + torch.compile, engine/fast_path.py): step time, images/s, achieved TFLOP/s and their share of the
device's dense bf16 peak, peak memory; and, apart, the train stream's images/s alone (no model).

A step is the trainer's: autocast forward, fp32 loss, backward, the guarded step (fused optimizer, found_inf) on a
fixed synthetic batch, so the data path is not in it. FLOPs per step: 3 × the forward's (backward ≈ 2 × forward),
counted once per model at the image size (yolotr.model.info, 2 FLOPs per multiply-add). Prints a markdown table and
writes --json.

    python benchmarks/bench_speed.py --device cuda --models yolov5s yolotr-s --imgsz 320 640 --batch 64
    python benchmarks/bench_speed.py --loader DATA_YAML --imgsz 640 --batch 64 --workers 8     # the stream alone
    python benchmarks/bench_speed.py --device cpu --models yolotr-n --imgsz 64 --batch 2 --steps 2 --warmup 1 \
        --compile-backend eager                                                                  # a dry run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from yolotr.config.run import TrainConfig
from yolotr.engine.fast_path import FastPath
from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.guard.step import BufferGuard, guarded_step
from yolotr.model.info import count_flops
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "models"
# Dense bf16 (fp16 where the card has no bf16) tensor-core peak in TFLOP/s, from the vendors' data sheets; matched by
# substring of torch.cuda.get_device_name(). --peak-tflops overrides.
PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0,
               "A10G": 70.0, "A10": 125.0, "V100": 125.0, "T4": 65.0}


def synthetic_targets(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(N, 6) [image, class, cx, cy, w, h]: 4 boxes per image of 5-50 % of the image, so every level gets matches."""
    n = batch * 4
    image = torch.arange(batch).repeat_interleave(4).float()
    cls = torch.randint(0, 80, (n,), generator=generator).float()
    wh = 0.05 + 0.45 * torch.rand(n, 2, generator=generator)
    centre = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=generator)
    return torch.cat((image[:, None], cls[:, None], centre, wh), dim=1)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(name: str, imgsz: int, batch: int, device: torch.device, fast: FastPath, *, steps: int, warmup: int,
               dtype: torch.dtype) -> dict:
    """Median seconds of one training step after `warmup` steps (the first compiles), and the peak memory."""
    torch.manual_seed(0)
    model = DetectionModel(CONFIGS / f"{name}.yaml").to(device).train()
    gflops = 3 * count_flops(model, (imgsz, imgsz)) * batch / 1e9  # forward + backward, the whole batch
    model = fast.prepare_model(model)
    loss_fn = ComputeLoss(model, imgsz=imgsz)
    optimizer = build_optimizer(build_param_groups(model, 5e-4, 0.2), "sgd", 0.01, 0.937,
                                fused=device.type == "cuda" or None)
    fast.compile_model(model)
    params, buffers = list(model.parameters()), BufferGuard(model)
    no_skip = torch.zeros((), dtype=torch.bool, device=device)
    generator = torch.Generator().manual_seed(0)
    images = fast.images(torch.rand(batch, 3, imgsz, imgsz, generator=generator).to(device))
    targets = synthetic_targets(batch, generator).to(device)

    def step() -> None:
        before = buffers.save()
        with torch.autocast(device.type, dtype=dtype):
            preds = model(images)
        loss, _ = loss_fn(preds, targets)
        loss.backward()
        guarded_step(params, optimizer, max_norm=1.0, images=batch, force_skip=no_skip, buffers=buffers,
                     buffers_before=before)
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    step()
    _sync(device)
    first_step_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"model": name, "imgsz": imgsz, "batch": batch, "path": "compiled" if fast.compile else "eager",
            "channels_last": fast.channels_last, "s_per_step": seconds, "images_per_s": batch / seconds,
            "tflops": gflops / seconds / 1e3, "first_step_s": first_step_s,
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def loader_images_per_s(data_yaml: str, imgsz: int, batch: int, workers: int, batches: int, augment_on: str,
                        device: torch.device) -> dict:
    """The train stream alone (mosaic and augmentations at `imgsz`), after one warm-up batch. augment_on: cpu (the
    workers decode and augment) or device (the workers plan, `device` decodes and renders: train.augment_on)."""
    from yolotr.config.augment import AugmentConfig
    from yolotr.data.spec import load_data_yaml
    from yolotr.data.stream import TrainStream

    spec = load_data_yaml(data_yaml, splits=("train",))
    stream = TrainStream(spec.train, global_batch_size=batch, rank=0, world_size=1, seed=0, imgsz=imgsz,
                         augment=AugmentConfig(), num_workers=workers,
                         render_device=device if augment_on == "device" else None)
    it = iter(stream)
    next(it)
    _sync(device)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        try:
            images += len(next(it).keys)
        except StopIteration:  # a small set: the epoch ended, the rate stands on what was timed
            break
    _sync(device)
    seconds = time.perf_counter() - start
    it.close()
    return {"loader": data_yaml, "imgsz": imgsz, "batch": batch, "workers": workers, "augment_on": augment_on,
            "images_per_s": images / seconds if seconds > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="*", default=["yolov5s", "yolotr-s"])
    parser.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one compiles)")
    parser.add_argument("--paths", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak, if not in the table")
    parser.add_argument("--loader", default=None, help="a data yaml: time the train stream alone, at each --imgsz")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--augment-on", nargs="+", default=["cpu"], choices=["cpu", "device"],
                        help="the loader's data paths to time (train.augment_on; device: on --device)")
    parser.add_argument("--deadline-s", type=float, default=None, help="start no configuration after this many s")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    peak = peak_tflops(device, args.peak_tflops)
    began = time.perf_counter()
    rows: list[dict] = []
    for imgsz in args.imgsz:
        for name in args.models:
            for path in args.paths:
                if args.deadline_s is not None and time.perf_counter() - began > args.deadline_s:
                    print(f"deadline: {name} {imgsz} {path} not run", flush=True)
                    continue
                on = path == "compiled"
                fast = FastPath.from_config(TrainConfig(compile=on, channels_last=on,
                                                        compile_backend=args.compile_backend), device)
                row = time_steps(name, imgsz, args.batch, device, fast, steps=args.steps, warmup=args.warmup,
                                 dtype=dtype)
                row["peak_share"] = row["tflops"] / peak if peak else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    loaders = [loader_images_per_s(args.loader, imgsz, args.batch, args.workers, args.loader_batches, where, device)
               for imgsz in args.imgsz for where in args.augment_on] if args.loader else []
    for row in loaders:
        print(json.dumps(row), flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{name}, {args.precision}, batch {args.batch}, dense peak {peak or 'unknown'} TFLOP/s\n")
    if rows:
        print("| model | imgsz | path | s/step | images/s | TFLOP/s | share of peak | peak GiB | first step s |")
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            share = f"{100 * r['peak_share']:.1f} %" if r["peak_share"] is not None else "—"
            mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "—"
            print(f"| {r['model']} | {r['imgsz']} | {r['path']} | {r['s_per_step']:.4f} | {r['images_per_s']:.1f} | "
                  f"{r['tflops']:.2f} | {share} | {mem} | {r['first_step_s']:.1f} |")
    for r in loaders:
        print(f"\ntrain stream alone at {r['imgsz']} px, {r['workers']} workers, augment_on {r['augment_on']}: "
              f"{r['images_per_s']:.1f} images/s")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "precision": args.precision, "peak_tflops": peak,
                                         "steps": rows, "loader": loaders}, indent=1))


if __name__ == "__main__":
    main()
