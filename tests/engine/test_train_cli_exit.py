"""How `yolotr train` ends: a run with DataLoader workers ends without a traceback, and a data yaml whose split is
missing is one line on stderr with exit 2, recorded in the run folder's exit.json."""

from __future__ import annotations

import json

from tests.engine.conftest import run_train


def test_a_run_with_dataloader_workers_ends_with_a_clean_stderr_and_prints_progress_lines(train_config, tmp_path):
    config = train_config(train={"num_workers": 2, "max_steps": 6, "progress_bar": True}, val={"every_epochs": 1})

    result = run_train(config, launcher="single")  # stderr is a pipe: lines, not a bar

    assert result.returncode == 0, result.stderr[-3000:]
    for symptom in ("Traceback", "killed by signal", "Exception ignored", "Error"):
        assert symptom not in result.stderr, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "exit.json").read_text())["exit_code"] == 0
    progress = [line for line in result.stderr.splitlines() if line.startswith("[yolotr] step ")]
    assert progress and progress[0].startswith("[yolotr] step 1/6 (16.7%) epoch 0 loss ")
    assert progress[-1].startswith("[yolotr] step 6/6 (100.0%)") and len(progress) < 6  # not one per step


def test_a_missing_split_folder_is_one_line_exit_2_and_the_run_folder_says_why(train_config, tmp_path, tiny_data):
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tiny_data.parent}\ntrain: train\nval: no-such-split\nnames: [a, b, c, d]\n")
    config = train_config(data=str(data))

    result = run_train(config, launcher="single")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("yolotr train: error:")]
    assert "no-such-split" in line
    exit_json = json.loads((tmp_path / "run" / "exit.json").read_text())
    assert exit_json["exit_code"] == 2 and "no-such-split" in exit_json["reason"]
