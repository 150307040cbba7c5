"""Train-stream images/s with the shards behind HTTP and in S3, beside the same shards on local disk, in one run.

Servers on 127.0.0.1, the ones the tests use (tests/data/remote_servers.py): Python's ThreadingHTTPServer, and moto's
S3 server reached with s3fs. Conditions, each one epoch of TrainStream (mosaic, the default augmentations):

* local: the shards on disk (plain `open`);
* cold: an empty shard cache, every shard downloaded during the epoch (prefetch ahead of the order);
* warm: the cache holding the set (a second epoch), no request at all;
* cold, 50 MB/s: the HTTP server throttled by sleeping after every 64 KiB chunk for chunk / (50 MB/s).

Rounds interleave local and remote epochs; each ratio is the median over rounds of back-to-back pairs. Bytes
downloaded per epoch are counted at the HTTP server (body bytes sent) and, for S3, as the bytes the cache received.

    OMP_NUM_THREADS=1 python benchmarks/bench_remote.py [--images 256] [--imgsz 320] [--workers 1] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.data.remote_servers import http_server, s3_server, upload_folder  # noqa: E402
from yolotr.config.augment import AugmentConfig  # noqa: E402
from yolotr.data.remote.location import RemoteOptions  # noqa: E402
from yolotr.data.spec import load_data_yaml  # noqa: E402
from yolotr.data.stream import TrainStream  # noqa: E402

BATCH = 16
THROTTLE = 50e6  # bytes/s


def epoch_rate(split, *, imgsz: int, workers: int) -> float:
    stream = TrainStream(split, global_batch_size=BATCH, rank=0, world_size=1, seed=0, imgsz=imgsz,
                         augment=AugmentConfig(), num_workers=workers)
    started, images = time.perf_counter(), 0
    for batch in stream:
        images += len(batch.keys)
    return images / (time.perf_counter() - started)


def cache_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.tar")) if folder.exists() else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--samples-per-shard", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    logging.getLogger("yolotr").setLevel(logging.WARNING)  # the epoch summaries

    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    try:
        subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(work / "set"), "--train",
                        str(args.images), "--val", "8", "--imgsz", str(args.imgsz), "--samples-per-shard",
                        str(args.samples_per_shard), "-q"], check=True)
        local = load_data_yaml(work / "set" / "data.yaml").train
        size = sum(s.bytes for s in local.shards)
        print(f"{local.num_samples} images, {len(local.shards)} shards, {size / 1e6:.1f} MB; batch {BATCH}, "
              f"imgsz {args.imgsz}, {args.workers} worker(s), {args.rounds} rounds")
        rates: dict[str, list[float]] = {}
        downloaded: dict[str, list[int]] = {}

        def measure(name: str, split, bytes_now) -> None:
            before = bytes_now()
            remote = epoch_rate(split, imgsz=args.imgsz, workers=args.workers)
            moved = bytes_now() - before
            reference = epoch_rate(local, imgsz=args.imgsz, workers=args.workers)
            rates.setdefault(name, []).append(remote / reference)
            rates.setdefault(f"{name} img/s", []).append(remote)
            rates.setdefault("local img/s", []).append(reference)
            downloaded.setdefault(name, []).append(moved)

        with http_server(work / "set") as server, s3_server(free_port()):
            upload_folder(work / "set", "bench", "set")
            for round_number in range(args.rounds):
                for kind, url in (("http", f"{server.url}/data.yaml"), ("s3", "s3://bench/set/data.yaml")):
                    cache = work / f"cache-{kind}-{round_number}"
                    split = load_data_yaml(url, remote=RemoteOptions(cache_dir=str(cache))).train
                    counter = (lambda: server.bytes_sent) if kind == "http" else (lambda c=cache: cache_bytes(c))
                    measure(f"{kind} cold", split, counter)
                    measure(f"{kind} warm", split, counter)
                cache = work / f"cache-throttled-{round_number}"
                server.faults.bytes_per_s = THROTTLE
                split = load_data_yaml(f"{server.url}/data.yaml", remote=RemoteOptions(cache_dir=str(cache))).train
                measure("http cold 50 MB/s", split, lambda: server.bytes_sent)
                server.faults.bytes_per_s = 0.0

        print(f"local disk: {statistics.median(rates['local img/s']):.1f} img/s (median of every local epoch)")
        print("| source | img/s | vs local (median of paired ratios) | bytes downloaded in the epoch / set size |")
        print("|---|---:|---:|---:|")
        for name in ("http cold", "http warm", "http cold 50 MB/s", "s3 cold", "s3 warm"):
            print(f"| {name} | {statistics.median(rates[f'{name} img/s']):.1f} | "
                  f"{statistics.median(rates[name]):.3f} | {max(downloaded[name]) / size:.3f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
