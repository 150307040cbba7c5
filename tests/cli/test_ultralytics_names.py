"""`yolotr train epochs=3 imgsz=64 batch=8 ...` means what it means in `yolo train`: one table
(yolotr/config/aliases.py) for the command line and the Python API, printed by `yolotr train --help`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from yolotr.api import config_key
from yolotr.config.aliases import ALIASES, NOT_SUPPORTED, TOP_LEVEL_KEYS, to_key_paths
from yolotr.config.tree import ConfigError
from yolotr.engine.device_choice import DeviceRequest, parse_device, visible_devices

REPO = Path(__file__).resolve().parents[2]


def _train(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {key: value for key, value in os.environ.items() if key != "RANK"}
    return subprocess.run([sys.executable, "-m", "yolotr", "train", *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}, timeout=120)


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text("train: t\nval: v\nnames: [a]\n")  # --print-config checks that the file exists, not its splits
    return path


def test_ultralytics_names_set_the_keys_they_mean(tmp_path, data):
    result = _train("--config", "demo", f"data={data}", "epochs=3", "imgsz=64", "batch=8", "workers=0",
                    "optimizer=AdamW", "lr0=0.02", "seed=5", "amp=false", "project=out", "name=first", "--print-config",
                    cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert (cfg["train"]["epochs"], cfg["train"]["imgsz"], cfg["train"]["batch_size"]) == (3, 64, 8)
    assert (cfg["train"]["num_workers"], cfg["train"]["optimizer"], cfg["train"]["lr0"]) == (0, "adamw", 0.02)
    assert cfg["train"]["precision"] == "fp32" and cfg["run"]["seed"] == 5
    assert cfg["run"]["dir"] == "out/first"


def test_resume_true_continues_the_newest_run_as_resume_auto(tmp_path, data):
    result = _train(f"data={data}", "resume=true", "--print-config", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["checkpoint"]["resume"] == "auto"


def test_an_ultralytics_name_yolotr_lacks_is_refused_as_not_supported_yet(tmp_path, data):
    result = _train(f"data={data}", "epochs=3", "patience=50", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "yolotr train: error: config key 'patience' in command line: ultralytics' 'patience' is not supported yet: "
        "training runs all its epochs (no early stop); the best weights are kept in weights/best.safetensors"]


def test_a_name_given_together_with_the_key_it_stands_for_is_refused_naming_both(tmp_path, data):
    result = _train(f"data={data}", "batch=8", "train.batch_size=16", "--print-config", cwd=tmp_path)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'train.batch_size'" in result.stderr and "which batch sets too: give one of them" in result.stderr


def test_yolov5_flags_are_answered_with_the_key_value_form_they_mean(tmp_path):
    result = _train("--data", "D", "--epochs", "3", "--img", "64", "--cos-lr", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "yolotr train takes settings as key=value: did you mean data=D epochs=3 imgsz=64 cos_lr=true? "
        "(yolotr train --help)")


def test_train_help_prints_the_common_keys_and_every_alias(tmp_path):
    result = _train("--help", cwd=tmp_path)

    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())  # argparse and the table wrap lines
    assert "common keys" in help_text and "train.epochs train.imgsz train.batch_size" in help_text
    for name, alias in ALIASES.items():
        assert f" {name} {alias.key}" in help_text, name
    assert "not supported yet:" in help_text and " patience " in help_text


def test_device_cpu_is_taken_and_a_gpu_that_is_not_there_is_refused_before_any_rank_starts(tmp_path, data):
    ok = _train(f"data={data}", "device=cpu", "--print-config", cwd=tmp_path)
    missing = _train(f"data={data}", "device=0,1", cwd=tmp_path, CUDA_VISIBLE_DEVICES="")  # no GPU visible
    bad = _train(f"data={data}", "device=mps", cwd=tmp_path)

    assert ok.returncode == 0, ok.stderr
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        "yolotr train: error: config key 'device' in command line: asks for GPU 0,1, but 0 GPU(s) are visible here "
        "(CUDA_VISIBLE_DEVICES=)"]
    assert bad.returncode == 2 and "config key 'device'" in bad.stderr and "got 'mps'" in bad.stderr
    assert parse_device("cuda:1") == DeviceRequest((1,)) and parse_device([0, 1]).ranks == 2
    assert parse_device("cpu") == DeviceRequest(()) and parse_device(None) is None
    assert visible_devices((0, 1), {"CUDA_VISIBLE_DEVICES": "4,5,6"}) == "4,5" and visible_devices((1,), {}) == "1"


def test_the_api_reads_the_same_table():
    for name, alias in ALIASES.items():
        assert config_key(name) == alias.key
    with pytest.raises(TypeError, match="'patience' ultralytics' 'patience' is not supported yet"):
        config_key("patience")
    assert to_key_paths([("optimizer", "SGD"), ("name", "b")], "YOLO.train()") == {"train.optimizer": "sgd",
                                                                                   "run.dir": "runs/b"}
    with pytest.raises(ConfigError, match="which epochs sets too"):
        to_key_paths([("epochs", 3), ("train.epochs", 4)])


def test_no_alias_shadows_a_key_and_no_name_is_both_mapped_and_refused():
    assert not set(ALIASES) & set(TOP_LEVEL_KEYS)
    assert not set(ALIASES) & set(NOT_SUPPORTED)
