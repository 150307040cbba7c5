"""Presets usable from anywhere: a config file's relative paths are found beside it, and model / train presets ship
inside the package (configs/models and configs/train in a checkout are links to them)."""

import shutil
import subprocess
import sys
import zipfile

import yaml

from tests.engine.conftest import REPO
from yolotr.config import load_config
from yolotr.config.presets import PRESETS_DIR, find_preset


def test_the_demo_config_loads_from_another_folder_with_its_model_found_among_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(REPO / "configs/train/demo.yaml", check_files=False)
    assert cfg.model == str(PRESETS_DIR / "models" / "yolotr-n.yaml")
    assert cfg.run.dir == "runs/demo"  # the run folder stays relative to the working directory


def test_relative_paths_in_a_config_file_are_found_beside_it_before_the_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mine.yaml").write_text((PRESETS_DIR / "models" / "yolov5n.yaml").read_text())
    (project / "data.yaml").write_text("names: [a]\n")
    (project / "train.yaml").write_text(yaml.safe_dump({"model": "mine.yaml", "data": "data.yaml"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.yaml").write_text("names: [b]\n")  # a same-named file in the working directory loses
    monkeypatch.chdir(elsewhere)
    cfg = load_config(project / "train.yaml")
    assert cfg.model == str(project / "mine.yaml")
    assert cfg.data == str(project / "data.yaml")


def test_command_line_paths_stay_relative_to_the_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.yaml").write_text("names: [a]\n")
    (project / "train.yaml").write_text(yaml.safe_dump({"data": "data.yaml"}))
    (tmp_path / "data.yaml").write_text("names: [b]\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(project / "train.yaml", ["data=data.yaml"])
    assert cfg.data == "data.yaml"


def test_model_and_config_presets_are_found_by_name_with_or_without_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("yolotr-s", "yolotr-s.yaml"):
        cfg = load_config(None, [f"model={name}"], check_files=False)
        assert cfg.model == str(PRESETS_DIR / "models" / "yolotr-s.yaml")
    cfg = load_config("coco-yolov5", check_files=False)
    assert cfg.model == str(PRESETS_DIR / "models" / "yolotr-s.yaml") and cfg.train.imgsz == 640
    assert find_preset("configs/models/yolotr-s.yaml", "models") is None  # a path is never a preset name


def test_the_checkout_configs_folders_are_the_packaged_presets():
    for kind in ("models", "train"):
        assert (REPO / "configs" / kind).resolve() == PRESETS_DIR / kind
    assert (REPO / "configs/models/yolotr-s.yaml").read_text() == (PRESETS_DIR / "models/yolotr-s.yaml").read_text()


def test_a_wheel_of_the_project_carries_every_model_and_train_preset(tmp_path):
    source = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info into the tree it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "yolotr", source / "yolotr", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("yolotr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("models", "train"):
        for preset in (PRESETS_DIR / kind).glob("*.yaml"):
            assert f"yolotr/config/presets/{kind}/{preset.name}" in names
