"""`YOLO.add_callback`: ultralytics' event names, fired at their points of a real (short) training run with a
read-only view of the trainer; a callback that raises stops the run, names itself, and its exception reaches the
caller, on every rank."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.engine.conftest import free_port
from yolotr.engine.callbacks import EVENTS, Callbacks

REPO = Path(__file__).resolve().parents[2]

# 16 training images in batches of 8: 2 steps an epoch; validated after each epoch and at the end.
SHORT_RUN = {"config": "demo", "epochs": 2, "imgsz": 64, "batch": 8, "workers": 0, "train.nominal_batch_size": 8,
             "train.warmup_steps_min": 0, "train.log_every": 1, "val.every_epochs": 1, "val.batch_size": 8,
             "checkpoint.every": 100, "wandb.enabled": False, "log.tensorboard": False, "train.progress_bar": False}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from yolotr.cli import main

    out = tmp_path_factory.mktemp("small")
    assert main(["data", "synth", "--out", str(out), "--train", "16", "--val", "8", "--classes", "3",
                 "--imgsz", "64"]) == 0
    return out / "data.yaml"


def _recorder(calls: list, event: str):
    def record(trainer):
        calls.append((event, trainer.epoch, trainer.step))

    return record


def test_every_event_fires_at_its_point_in_order_with_the_trainers_view(small_data, tmp_path):
    from yolotr import YOLO

    model = YOLO("yolotr-n.yaml")
    calls, seen = [], {}
    for event in EVENTS:
        model.add_callback(event, _recorder(calls, event))

    def at_fit_epoch_end(trainer):
        seen.setdefault("metrics", []).append(dict(trainer.metrics))
        seen["save_dir"], seen["best_fitness"] = trainer.save_dir, trainer.best_fitness
        seen["names"], seen["world_size"] = trainer.names, trainer.world_size
        seen["model"] = type(trainer.model).__name__
        try:
            trainer.epoch = 5
        except AttributeError as error:
            seen["read_only"] = str(error)

    model.add_callback("on_fit_epoch_end", at_fit_epoch_end)
    model.add_callback("on_train_batch_end", lambda trainer: seen.setdefault("losses", []).append(
        trainer.train_metrics.get("loss")))
    metrics = model.train(small_data, **{**SHORT_RUN, "run.dir": str(tmp_path / "runs/cb")})

    def epoch(e, first_step):  # (event, view.epoch, view.step) of one epoch of two steps, validated at its end
        return [("on_train_epoch_start", e, first_step),
                ("on_train_batch_start", e, first_step), ("on_train_batch_end", e, first_step + 1),
                ("on_train_batch_start", e, first_step + 1), ("on_train_batch_end", e, first_step + 2),
                ("on_train_epoch_end", e, first_step + 2), ("on_val_start", e, first_step + 2),
                ("on_val_end", e, first_step + 2), ("on_fit_epoch_end", e, first_step + 2),
                ("on_model_save", e, first_step + 2)]

    assert calls == [("on_pretrain_routine_start", 0, 0), ("on_pretrain_routine_end", 0, 0), ("on_train_start", 0, 0),
                     *epoch(0, 0), *epoch(1, 2),
                     ("on_val_start", 1, 4), ("on_val_end", 1, 4), ("on_train_end", 1, 4), ("teardown", 1, 4)]
    run_dir = tmp_path / "runs/cb"
    assert seen["save_dir"] == run_dir and seen["names"] == list(yaml.safe_load(small_data.read_text())["names"])
    assert seen["world_size"] == 1 and seen["model"] == "DetectionModel"
    assert len(seen["metrics"]) == 2 and {"map50", "map", "precision", "recall", "fitness"} <= set(seen["metrics"][0])
    assert seen["best_fitness"] == max(m["fitness"] for m in seen["metrics"])
    assert seen["read_only"] == "the trainer's view is read-only: cannot set 'epoch'"
    assert len(seen["losses"]) == 4 and all(isinstance(loss, float) for loss in seen["losses"])
    assert json.loads((run_dir / "exit.json").read_text())["exit_code"] == 0 and "map50" in metrics
    assert model.callbacks.registered["on_fit_epoch_end"][-1] is at_fit_epoch_end  # kept with the best weights


def test_a_callback_that_raises_stops_the_run_naming_itself_and_the_caller_gets_its_exception(small_data, tmp_path,
                                                                                              capfd):
    from yolotr import YOLO

    model = YOLO("yolotr-n.yaml")
    calls = []
    for event in ("on_train_batch_end", "on_fit_epoch_end", "on_train_end", "teardown"):
        model.add_callback(event, _recorder(calls, event))

    def upload_metrics(trainer):
        raise ConnectionError("metrics server refused the upload")

    model.add_callback("on_train_epoch_end", upload_metrics)
    run_dir = tmp_path / "runs/fails"
    with pytest.raises(ConnectionError, match="metrics server refused the upload") as raised:
        model.train(small_data, **{**SHORT_RUN, "run.dir": str(run_dir)})

    note = ("raised by callback test_a_callback_that_raises_stops_the_run_naming_itself_and_the_caller_gets_its_"
            f"exception.<locals>.upload_metrics (on_train_epoch_end); the run stopped: see {run_dir / 'exit.json'}")
    assert raised.value.__notes__ == [note]
    # The first epoch's steps, then nothing but the clean-up: no validation, no second epoch.
    assert calls == [("on_train_batch_end", 0, 1), ("on_train_batch_end", 0, 2), ("teardown", 0, 2)]
    stopped = json.loads((run_dir / "exit.json").read_text())
    assert stopped["exit_code"] == 1 and stopped["step"] == 2
    assert stopped["reason"] == ("callback test_a_callback_that_raises_stops_the_run_naming_itself_and_the_caller_"
                                 "gets_its_exception.<locals>.upload_metrics (on_train_epoch_end) raised "
                                 "ConnectionError: metrics server refused the upload")
    assert (run_dir / "weights/last.safetensors").is_file()  # what the run trained is kept
    told = [line for line in capfd.readouterr().err.splitlines() if "upload_metrics" in line]
    # One line, which also says how to continue (checkpoint/run_status.py: the resume command).
    assert len(told) == 1 and told[0].startswith(f"[yolotr] error: stopped at step 2: {stopped['reason']} (exit 1"), told

    model.clear_callback("on_train_epoch_end")  # without it, the next run trains to its end
    calls.clear()
    assert "map50" in model.train(small_data, **{**SHORT_RUN, "epochs": 1, "run.dir": str(tmp_path / "runs/again")})
    assert calls[-2:] == [("on_train_end", 0, 2), ("teardown", 0, 2)]


def test_a_teardown_callback_that_raises_after_a_completed_run_is_logged_and_raised(small_data, tmp_path, capfd):
    from yolotr import YOLO

    model = YOLO("yolotr-n.yaml")

    def close_connection(trainer):
        raise OSError("connection already closed")

    model.add_callback("teardown", close_connection)
    run_dir = tmp_path / "runs/teardown"
    with pytest.raises(OSError, match="connection already closed"):
        model.train(small_data, **{**SHORT_RUN, "epochs": 1, "run.dir": str(run_dir)})
    assert json.loads((run_dir / "exit.json").read_text())["exit_code"] == 0  # the run itself completed
    told = [line for line in capfd.readouterr().err.splitlines() if "close_connection" in line]
    assert len(told) == 1 and told[0].startswith("[yolotr] error: callback ") and told[0].endswith(
        "close_connection (teardown) raised OSError: connection already closed")


def test_an_unknown_event_is_refused_listing_the_events():
    callbacks = Callbacks()
    with pytest.raises(ValueError, match="unknown callback event 'on_epoch_end'; the events are: "
                                         "on_pretrain_routine_start, on_pretrain_routine_end, on_train_start, "):
        callbacks.add("on_epoch_end", print)
    with pytest.raises(TypeError, match="the callback for on_train_end must be callable, got str"):
        callbacks.add("on_train_end", "print")
    assert not callbacks


RANK_SCRIPT = """
import os, sys
from yolotr import YOLO

def fail_on_rank_1(trainer):
    if trainer.rank == 1 and trainer.step == 1:
        raise RuntimeError("rank 1's callback failed")

model = YOLO("yolotr-n.yaml")
model.add_callback("on_train_batch_end", fail_on_rank_1)
model.add_callback("teardown", lambda trainer: print(f"teardown rank {trainer.rank} step {trainer.step}", flush=True))
try:
    model.train(sys.argv[1], **SETTINGS)
except Exception as error:
    print(f"rank {os.environ['RANK']} raised {type(error).__name__}: {error}", flush=True)
    sys.exit(1)
"""


@pytest.mark.slow
def test_a_callback_failing_on_one_rank_stops_every_rank_without_a_hang(small_data, tmp_path):
    run_dir = tmp_path / "runs/ranks"
    settings = {**SHORT_RUN, "run.dir": str(run_dir)}  # batch=8: 4 images per rank
    script = tmp_path / "train_with_callback.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT).replace("**SETTINGS", f"**{settings!r}"))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(script), str(small_data)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
             "ACCELERATE_USE_CPU": "1"})
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "rank 1 raised RuntimeError: rank 1's callback failed" in out, out[-3000:]
    assert "rank 0 raised RuntimeError: training stopped with exit code 1" in out, out[-3000:]
    assert "teardown rank 0 step 1" in out and "teardown rank 1 step 1" in out, out[-3000:]
    stopped = json.loads((run_dir / "exit.json").read_text())
    assert stopped["exit_code"] == 1 and stopped["step"] == 1
    assert stopped["reason"] == "rank 1: callback fail_on_rank_1 (on_train_batch_end) raised RuntimeError: rank 1's " \
                                "callback failed"
