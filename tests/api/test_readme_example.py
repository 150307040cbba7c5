"""The README's Python API example runs as written (on the small synthetic set its note describes)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from yolotr.cli import main

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def readme_api_example() -> str:
    section = (REPO / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_api_example_trains_validates_predicts_and_exports(tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path / "datasets/mini"), "--train", "64", "--val", "16",
                 "--imgsz", "64"]) == 0
    result = subprocess.run([sys.executable, "-c", readme_api_example()], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                                         "WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stderr[-4000:]
    # After the trainer's own summary: the metrics, 3 images' detections, the onnx file.
    metrics, *images, onnx = result.stdout.strip().splitlines()[-5:]
    assert re.fullmatch(r"mAP@0.5 \d\.\d{3}  mAP@0.5:0.95 \d\.\d{3}  \(runs/demo\)", metrics), result.stdout
    assert all(re.match(r"val_\d+\.jpg \[", line) for line in images), images
    assert onnx == "runs/demo/weights/best.onnx"
    assert (tmp_path / "runs/demo/weights/best.safetensors").is_file()
    assert (tmp_path / "runs/demo/weights/best.onnx").is_file()


def test_the_readme_api_example_saved_as_a_plain_script_trains_once(tmp_path):
    """Without an `if __name__ == "__main__":` guard: the checkpoint writer is a spawned process, and a spawned child
    re-runs the parent's main script unless told not to; that trained the model a second time inside the writer."""
    assert main(["data", "synth", "--out", str(tmp_path / "datasets/mini"), "--train", "64", "--val", "16",
                 "--imgsz", "64"]) == 0
    script = tmp_path / "train_mini.py"
    script.write_text(readme_api_example())
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                 "WANDB_MODE": "disabled"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "AssertionError" not in output and "Traceback" not in output, output[-4000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["demo"]
    records = [json.loads(line) for line in (tmp_path / "runs/demo/metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r.get("event") == "start"] != []
    assert len([r for r in records if r.get("event") == "start"]) == 1, "trained more than once"
    assert output.count("mAP@0.5 ") == 1, output[-4000:]
