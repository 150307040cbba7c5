"""`yolotr train ... nproc=2` and `YOLO(...).train(..., nproc=2)` start their ranks themselves (a torchrun agent, gloo
on the CPU), stream the ranks' output and give back the trainer's exit code or, from Python, the best weights or an
exception naming the rank's error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.conftest import REPO, run_in_own_session
from yolotr.config.tree import ConfigError
from yolotr.engine.device_choice import RankPlan, plan_ranks

SETTINGS = ("imgsz=64", "batch=8", "workers=0", "train.max_steps=2", "val.every_epochs=0", "log.tensorboard=false",
            "checkpoint.every=1000", "train.progress_bar=false")


def _env() -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    return {**base, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}


def _start_event(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r.get("event") == "start")


def _without_its_val_split(tmp_path: Path, data: Path) -> Path:
    """The data yaml with its val split pointing nowhere: found by the ranks' Trainer, not by the config check."""
    text = data.read_text().replace("path: .", f"path: {data.parent}")
    path = tmp_path / "data.yaml"
    path.write_text(text.replace("val/index.json", str(tmp_path / "missing" / "index.json")))
    return path


def test_nproc_2_trains_in_two_ranks_and_streams_rank_0s_lines(tmp_path, tiny_data, tiny_model):
    run_dir = tmp_path / "run"
    result = run_in_own_session([sys.executable, "-m", "yolotr", "train", f"model={tiny_model}", f"data={tiny_data}",
                                 *SETTINGS, f"run.dir={run_dir}", "nproc=2", "device=cpu"], _env(), 600)

    assert result.returncode == 0, result.stderr[-3000:]
    assert _start_event(run_dir)["world_size"] == 2
    assert result.stderr.count("[yolotr] done at step 2 (exit 0)") == 1  # rank 0's info lines, once
    assert result.stdout.startswith("run summary")
    assert "Traceback" not in result.stderr


def test_a_ranks_error_is_its_one_line_and_its_exit_code_without_the_agents_report(tmp_path, tiny_data, tiny_model):
    data = _without_its_val_split(tmp_path, tiny_data)
    result = run_in_own_session([sys.executable, "-m", "yolotr", "train", f"model={tiny_model}", f"data={data}",
                                 *SETTINGS, f"run.dir={tmp_path / 'run'}", "nproc=2"], _env(), 600)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("yolotr train: error: ") and "index file not found" in line
                         for line in lines), result.stderr[-3000:]


PYTHON_API = """
import json, sys
from yolotr import YOLO
model = YOLO(sys.argv[1])
try:
    metrics = model.train(data=sys.argv[2], nproc=2, imgsz=64, batch=8, workers=0, max_steps=2,
                          **{"run.dir": sys.argv[3], "val.every_epochs": 0, "log.tensorboard": False,
                             "train.progress_bar": False})
except RuntimeError as error:
    print(json.dumps({"error": str(error)}))
else:
    print(json.dumps({"metrics": sorted(metrics), "source": str(model.source), "run_dir": str(model.run_dir)}))
"""


def _api(model: Path, data: Path, run_dir: Path) -> dict:
    result = run_in_own_session([sys.executable, "-c", PYTHON_API, str(model), str(data), str(run_dir)], _env(), 600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_api_trains_in_two_ranks_and_holds_the_best_weights_after(tmp_path, tiny_data, tiny_model):
    answer = _api(tiny_model, tiny_data, tmp_path / "run")

    assert "map50" in answer.get("metrics", ()), answer
    assert answer["run_dir"] == str(tmp_path / "run")
    assert answer["source"] == str(tmp_path / "run" / "weights" / "best.safetensors")
    assert _start_event(tmp_path / "run")["world_size"] == 2


def test_the_api_raises_with_the_ranks_message(tmp_path, tiny_data, tiny_model):
    data = _without_its_val_split(tmp_path, tiny_data)

    answer = _api(tiny_model, data, tmp_path / "run")

    assert answer["error"].startswith("training in 2 ranks stopped with exit code 2: ")
    assert "index file not found" in answer["error"]


@pytest.mark.parametrize("device, nproc, plan", [(None, None, RankPlan(1, None)), ("cpu", "2", RankPlan(2, ())),
                                                 ("0,1", None, RankPlan(2, (0, 1))), ([2, 3], 2, RankPlan(2, (2, 3))),
                                                 ("cuda:1", None, RankPlan(1, (1,))), (None, 3, RankPlan(3, None))])
def test_device_and_nproc_say_how_many_ranks_see_which_devices(device, nproc, plan):
    assert plan_ranks(device, nproc, under_launcher=False) == plan


def test_contradicting_device_and_nproc_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="config key 'nproc'.*3 ranks for device=0,1: one rank per GPU"):
        plan_ranks("0,1", 3, under_launcher=False)
    with pytest.raises(ConfigError, match="config key 'nproc'.*expected a number of ranks >= 1, got '0'"):
        plan_ranks(None, "0", under_launcher=False)
    with pytest.raises(ConfigError, match="config key 'device'.*the launcher started the ranks already"):
        plan_ranks("0,1", None, under_launcher=True)


@pytest.mark.parametrize("notice", [signal.SIGTERM, signal.SIGUSR1], ids=["sigterm", "sigusr1"])
def test_a_notice_to_yolotr_train_reaches_the_ranks_which_checkpoint_and_it_exits_75(tmp_path, tiny_data, tiny_model,
                                                                                      notice):
    run_dir = tmp_path / "run"
    settings = [s for s in SETTINGS if not s.startswith("train.max_steps")]
    proc = subprocess.Popen([sys.executable, "-m", "yolotr", "train", f"model={tiny_model}", f"data={tiny_data}",
                             *settings, "train.max_steps=400", f"run.dir={run_dir}", "nproc=2"], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        metrics = run_dir / "metrics.jsonl"
        while not metrics.is_file() or '"kind": "train"' not in metrics.read_text():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(notice)  # to yolotr train alone, as a scheduler's notice to the job's process would come
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    assert proc.returncode == 75, err[-3000:]
    assert json.loads((run_dir / "exit.json").read_text())["exit_code"] == 75
    assert "Traceback" not in err and "preempted at step" in err
