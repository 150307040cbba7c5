"""What yolotr says goes two ways: a command's results through yolotr/console.py (stdout), everything else through
the `yolotr` logger, whose level --quiet and --verbose choose (yolotr/log.py). No module prints on its own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import yolotr

ROOT = Path(yolotr.__file__).parent
REPO = ROOT.parent
# The one module that writes to stdout and stderr itself: a command's results, and the CLI's last line on a failure.
CONSOLE_WRITERS = {ROOT / "console.py"}


def _direct_output(tree: ast.AST) -> list[int]:
    """Lines of `print(...)` calls and of `sys.stdout.write` / `sys.stderr.write` calls."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "print":
            lines.append(node.lineno)
        elif (isinstance(func, ast.Attribute) and func.attr in ("write", "writelines")
              and isinstance(func.value, ast.Attribute) and func.value.attr in ("stdout", "stderr")
              and isinstance(func.value.value, ast.Name) and func.value.value.id == "sys"):
            lines.append(node.lineno)
    return lines


def test_no_module_prints_except_the_console_writer():
    found = [f"{path.relative_to(REPO)}:{line}" for path in sorted(ROOT.rglob("*.py")) if path not in CONSOLE_WRITERS
             for line in _direct_output(ast.parse(path.read_text(), str(path)))]
    assert not found, "print through yolotr.console (a command's results) or a logger (everything else): " + ", ".join(found)


def test_the_check_finds_a_print_and_a_stderr_write():
    source = "import sys\nprint('x')\nsys.stderr.write('y')\nlog.info('z')\nfile.write('w')\n"
    assert _direct_output(ast.parse(source)) == [2, 3]


def _yolotr(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "RANK"}
    return subprocess.run([sys.executable, "-m", "yolotr", *args], capture_output=True, text=True, cwd=REPO,
                          env={**env, "OMP_NUM_THREADS": "1"}, timeout=120, check=True)


def test_quiet_silences_info_lines_and_verbose_shows_debug_lines_and_neither_touches_the_result(tmp_path):
    tiny = ["--train", "2", "--val", "1", "--imgsz", "64"]
    normal = _yolotr("data", "synth", "--out", str(tmp_path / "a"), *tiny)
    quiet = _yolotr("-q", "data", "synth", "--out", str(tmp_path / "b"), *tiny)  # before the command
    verbose = _yolotr("data", "synth", "--out", str(tmp_path / "c"), "--verbose", *tiny)  # among the options

    assert "[yolotr] data: drawing 2 train images of 64 px" in normal.stderr
    assert "debug:" not in normal.stderr
    assert quiet.stderr == ""
    assert "[yolotr] data: drawing 2 train images" in verbose.stderr
    assert "[yolotr] debug: shards: wrote " in verbose.stderr and "shard-000000.tar: 2 samples" in verbose.stderr
    for result in (normal, quiet, verbose):
        assert result.stdout.startswith("wrote 2 train and 1 val images of 4 classes to ")


def test_quiet_and_verbose_together_are_refused(tmp_path):
    result = subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(tmp_path), "-q", "-v"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


# ---------------------------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def twenty_images(tmp_path_factory) -> tuple[Path, Path]:
    """20 train and 8 val images of 64 px, and a narrow yolotr-n: a run of a few steps."""
    out = tmp_path_factory.mktemp("synth")
    _yolotr("data", "synth", "--out", str(out), "--train", "20", "--val", "8", "--imgsz", "64", "--seed", "0")
    model = yaml.safe_load((REPO / "configs/models/yolotr-n.yaml").read_text())
    model["width_multiple"] = 0.125
    (out / "tiny.yaml").write_text(yaml.safe_dump(model))
    return out / "data.yaml", out / "tiny.yaml"


def _train_run(tmp_path: Path, data: Path, model: Path, *settings: str, **env: str) -> subprocess.CompletedProcess:
    """`yolotr train` as a user types it, in an environment without any W&B setup (no key, no netrc, no mode)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {key: value for key, value in os.environ.items() if key != "RANK" and not key.startswith("WANDB")}
    result = subprocess.run(
        [sys.executable, "-m", "yolotr", "train", f"model={model}", f"data={data}", "imgsz=64", "workers=0",
         "val.every_epochs=1", "log.tensorboard=false", f"project={tmp_path}", *settings],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**base, "HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_plain_run_says_each_thing_once_shows_the_val_rows_and_no_wandb(tmp_path, twenty_images):
    result = _train_run(tmp_path, *twenty_images, "epochs=2", "batch=8", "name=plain")
    lines = result.stderr.splitlines()

    data_lines = [line for line in lines if line.startswith("[yolotr] data: 20 train samples")]
    assert data_lines == ["[yolotr] data: 20 train samples, global batch 8 = 1 rank(s) x 8: 2 steps per epoch; the "
                          "last 4 samples of each epoch's order (other ones each epoch) are not trained on, so that "
                          "every batch is full: a global batch that divides 20, e.g. batch=10, trains on every "
                          "sample"]
    rows = [line for line in lines if line.startswith("[yolotr] val epoch")]
    assert len(rows) == 2  # the final validation of the last epoch's weights repeats no row
    assert rows[0].startswith("[yolotr] val epoch 0: P ") and rows[1].startswith("[yolotr] val epoch 1: P ")
    assert all(" R " in row and " mAP50 " in row and " mAP50-95 " in row and "(8 images, " in row for row in rows)
    assert "wandb" not in result.stderr.lower() and "wandb" not in result.stdout.lower()
    assert not (tmp_path / "plain" / "wandb").exists()
    anchors = [line for line in lines if "autoanchor" in line]
    assert len(anchors) == 1 and anchors[0].startswith("[yolotr] autoanchor: BPR ")  # a sentence, not its record
    assert anchors[0].endswith("train boxes: the anchors fit")
    assert result.stdout.startswith("run summary")


def test_a_run_with_wandb_asked_for_says_where_it_went_in_one_line_and_wandb_says_nothing(tmp_path, twenty_images):
    result = _train_run(tmp_path, *twenty_images, "epochs=1", "batch=10", "name=tracked", WANDB_MODE="offline")
    lines = result.stderr.splitlines()

    where = [line for line in lines if "W&B" in line or "wandb" in line.lower()]
    assert len(where) == 1 and where[0].startswith(f"[yolotr] W&B: offline run in {tmp_path / 'tracked' / 'wandb'}")
    assert where[0].endswith(")") and "(upload with: wandb sync " in where[0]
    assert not any(line.startswith("wandb:") for line in result.stdout.splitlines() + lines)
    assert [line for line in lines if line.startswith("[yolotr] data: ")] == [
        "[yolotr] data: 20 train samples, global batch 10 = 1 rank(s) x 10: 2 steps per epoch"]
