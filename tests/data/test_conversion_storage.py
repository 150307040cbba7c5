"""A conversion that cannot be written (the disk full, the cache read-only) stops with exit 74 and one line naming
the folder, and leaves nothing behind that a later start could take for a whole conversion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml


def noisy_set(root: Path, count: int = 12) -> Path:
    """Images of 320x200 and 150x260 (not square, not a training size) filled with noise, so that they compress
    badly and a small file system fills."""
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 2)):
        for i in range(n):
            width, height = (320, 200) if i % 2 else (150, 260)
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "images" / split / f"{i}.jpg").write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.3\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "names": ["thing"]}))
    return root / "data.yaml"


def mount(folder: Path, *options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}): needs root, as in CI")


@pytest.fixture
def mounts():
    folders: list[Path] = []
    yield folders
    for folder in reversed(folders):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def yolotr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolotr", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_data_shard_onto_a_full_disk_is_exit_74_naming_the_folder_and_leaves_no_conversion(tmp_path, mounts):
    data = noisy_set(tmp_path / "set")
    out = tmp_path / "small"
    mount(out, "-t", "tmpfs", "-o", "size=64k", "tmpfs")
    mounts.append(out)

    done = yolotr("data", "shard", "--format", "yolo", "--src", str(data), "--out", str(out), cwd=tmp_path)

    assert done.returncode == 74, done.stderr
    assert "Traceback" not in done.stderr
    assert "no space left on device" in done.stderr and str(out) in done.stderr
    assert not (out / "data.yaml").exists() and not (out / "train").exists()  # nothing to mistake for shards


def test_training_from_a_yolo_set_with_a_read_only_cache_is_exit_74_naming_the_cache(tmp_path, mounts):
    data = noisy_set(tmp_path / "set", count=4)
    cache = tmp_path / "cache"
    cache.mkdir()
    mount(cache, "--bind", str(cache))
    mounts.append(cache)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(cache)], check=True)
    config = Path(__file__).resolve().parents[2] / "configs" / "train" / "demo.yaml"

    done = yolotr("train", "--config", str(config), f"data={data}", f"data_cache={cache}", "train.imgsz=64",
                  "train.max_steps=2", "train.progress_bar=false", "val.every_epochs=0", "wandb.enabled=false",
                  f"run.dir={tmp_path / 'run'}", cwd=tmp_path)

    assert done.returncode == 74, done.stderr
    assert "Traceback" not in done.stderr
    assert "read-only file system" in done.stderr and str(cache) in done.stderr
