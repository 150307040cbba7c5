"""Every bad input of the catalogue (tests/cli/bad_inputs/) meets the real `yolotr` command line and gets a clear
message or a counted skip, never a traceback, and what was written before it is still there, byte for byte.

The commands run in this process through `yolotr.cli.main`, the `yolotr` console script's own entry (a fresh
interpreter per case would spend ~4 s importing torch, 52 times); the shared run they damage copies of was made by a
real `yolotr train` process. `YOLOTR_BAD_INPUTS_REPORT=FILE` writes each case's message there as json lines
(what docs/reliability.md's table is made from).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli.bad_inputs import CASES, REPO, BadInput, World
from yolotr.cli import main


def _run(argv: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-m", "yolotr", *argv], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad-inputs")
    assert main(["data", "synth", "--out", str(root / "synth"), "--train", "16", "--val", "8", "--imgsz", "64",
                 "--seed", "0"]) == 0
    assert main(["data", "export", "--src", str(root / "synth" / "data.yaml"), "--out", str(root / "yolo")]) == 0
    model = yaml.safe_load((REPO / "configs/models/yolotr-n.yaml").read_text())
    model["width_multiple"] = 0.125
    (root / "tiny.yaml").write_text(yaml.safe_dump(model))
    config = {
        "model": str(root / "tiny.yaml"),
        "data": str(root / "synth" / "data.yaml"),
        "run": {"dir": str(root / "run"), "seed": 0},
        "train": {"epochs": 1, "max_steps": 2, "batch_size": 8, "nominal_batch_size": 8, "imgsz": 64,
                  "num_workers": 0, "warmup_epochs": 0.0, "log_every": 1, "progress_bar": False, "autoanchor": False},
        "val": {"every_epochs": 0, "batch_size": 8},
        "checkpoint": {"every": 1, "keep_last": 3},
        "wandb": {"enabled": False},
    }
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    _run(["train", "--config", str(root / "train.yaml")])  # the one real `yolotr train` process
    return World(synth=root / "synth" / "data.yaml", yolo=root / "yolo" / "data.yaml", model=root / "tiny.yaml",
                 run=root / "run", run_config=root / "train.yaml")


@pytest.fixture
def restore_signals():
    """`yolotr train` turns SIGTERM and SIGUSR1 into preemption notices: give pytest its own handlers back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _contents(folders: list[Path]) -> dict[str, str]:
    """sha256 → a path holding it, for every file under `folders`."""
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                found.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), str(path))
    return found


# Files a failed start may rewrite: the exit status and the job record are *about* this start.
REWRITTEN = {"exit.json", "job.json"}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_gets_a_clear_message_or_a_counted_skip(case: BadInput, world, tmp_path, capfd,
                                                             restore_signals, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    here = tmp_path / case.id
    here.mkdir()
    prepared = case.prepare(world, here)
    before = _contents(prepared.kept)

    try:
        code = main(prepared.argv)
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    finally:
        if prepared.cleanup:
            prepared.cleanup()
    out, err = capfd.readouterr()

    says = [words.format(here=here, synth=world.synth.parent) for words in case.says]
    _report(case, code, _message(err, out, says[0]))
    assert code == case.code, f"exit {code}, expected {case.code}\nSTDERR:\n{err[-4000:]}\nSTDOUT:\n{out[-2000:]}"
    assert "Traceback" not in out + err, err[-4000:]
    for words in says:  # an error is one line on stderr; a report (`data check`, a conversion) is on stdout
        assert words in out + err, f"{words!r} not in:\n{(out + err)[-4000:]}"
    if prepared.check:
        prepared.check(out + err)
    for path in prepared.absent:
        assert not path.exists(), f"{path} was made"
    after = _contents(prepared.kept)
    lost = {digest: path for digest, path in before.items() if digest not in after and Path(path).name not in REWRITTEN}
    assert not lost, f"lost or changed: {sorted(lost.values())}"


def _message(err: str, out: str, first_words: str) -> str:
    """What the user reads: the error line, else the first line that holds the case's first expected words."""
    errors = [line for line in err.splitlines() if ": error: " in line]
    found = [line for line in (err + "\n" + out).splitlines() if first_words in line]
    return (errors or found or [""])[0].strip()


def _report(case: BadInput, code: int, message: str) -> None:
    target = os.environ.get("YOLOTR_BAD_INPUTS_REPORT")
    if target:
        with open(target, "a") as fh:
            fh.write(json.dumps({"id": case.id, "area": case.area, "what": case.what, "code": code,
                                 "message": message, "kept": case.kept}) + "\n")
