"""Real runs of `yolotr train` on a tiny synthetic set and a tiny yolotr model, launched as real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    subprocess.run(
        [sys.executable, "-m", "yolotr", "data", "synth", "--out", str(out), "--train", "96", "--val", "16",
         "--imgsz", "64", "--seed", "0"],
        check=True, cwd=REPO, capture_output=True, timeout=300,
    )
    return out / "data.yaml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    cfg = yaml.safe_load((REPO / "configs/models/yolotr-n.yaml").read_text())
    cfg["width_multiple"] = 0.125
    path = tmp_path_factory.mktemp("model") / "yolotr-tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_train_config(directory: Path, data: Path, model: Path, /, **sections) -> Path:
    """A small training config (run folder `directory/run`) written into `directory`; `sections` update its own."""
    cfg = {
        "model": str(model),
        "data": str(data),
        "run": {"dir": str(directory / "run"), "seed": 0},
        "train": {"epochs": 1, "max_steps": 8, "batch_size": 8, "nominal_batch_size": 8, "imgsz": 64,
                  "num_workers": 0, "optimizer": "sgd", "lr0": 0.01, "warmup_epochs": 0.0, "log_every": 1,
                  "progress_bar": False},
        "val": {"every_epochs": 0, "batch_size": 8},
        # These tests run a command again to continue it, so they opt in to resuming (the default, none, starts
        # a new run in the next free folder).
        "checkpoint": {"every": 1000, "keep_last": 3, "resume": "auto"},
        "wandb": {"enabled": False},
        # TensorBoard costs each run its import; the tests of its files turn it on (tests/engine/test_resume.py).
        "log": {"tensorboard": False},
        "debug": {"rank_digests": True},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    path = directory / f"train-{len(list(directory.glob('train-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def train_config(tmp_path, tiny_data, tiny_model):
    """Writes a small training config into tmp_path and returns its path."""

    def make(**sections) -> Path:
        return write_train_config(tmp_path, tiny_data, tiny_model, **sections)

    return make


def run_train(config: Path, *overrides: str, nproc: int = 2, launcher: str = "torchrun", env: dict | None = None,
              timeout: int = 600, extra_launcher_args: tuple = ()) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **(env or {})}
    if launcher == "torchrun":
        cmd = [str(BIN / "torchrun"), f"--nproc-per-node={nproc}", f"--master-port={free_port()}",
               *extra_launcher_args, "-m", "yolotr", "train"]
    elif launcher == "single":
        cmd = [sys.executable, "-m", "yolotr", "train"]
    elif launcher == "accelerate":
        environ["ACCELERATE_USE_CPU"] = "1"
        cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               *extra_launcher_args, "-m", "yolotr", "train"]
    elif launcher == "deepspeed":
        # DeepSpeed on CPU: DS_ACCELERATOR=cpu, and no ACCELERATE_USE_CPU (it would silently drop DeepSpeed).
        environ.pop("ACCELERATE_USE_CPU", None)
        environ["DS_ACCELERATOR"] = "cpu"
        cmd = [str(BIN / "accelerate"), "launch", "--use_deepspeed", "--num_processes", str(nproc),
               "--deepspeed_config_file", str(REPO / "configs/deepspeed/zero2.json"), "--num_machines", "1",
               "--main_process_port", str(free_port()), *extra_launcher_args, "-m", "yolotr", "train"]
    else:
        raise ValueError(launcher)
    return run_in_own_session([*cmd, "--config", str(config), *overrides], environ, timeout)


def run_in_own_session(cmd: list[str], env: dict[str, str], timeout: float, *,
                       merge_stderr: bool = False) -> subprocess.CompletedProcess:
    """Runs `cmd` from the repository root in its own session: on a timeout the launcher *and* its workers are
    killed, never left behind to load the machine."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout}s\n{(err or out)[-5000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err or "")


@pytest.fixture
def launched():
    """Processes started with start_new_session=True by a test; their whole group is killed at the end."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def child_pids(parent: int) -> list[int]:
    """Direct children of a process (a launcher's workers), read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(entry.name))
    return children


def descendant_pids(root: int) -> list[int]:
    """Every process below `root` (a launcher's workers and their helpers), children first found first."""
    found, frontier = [], [root]
    while frontier:
        children = [pid for parent in frontier for pid in child_pids(parent)]
        found += children
        frontier = children
    return found


def _reject_non_json_constant(name: str):
    raise ValueError(f"{name} is not json (a bare NaN/Infinity that other readers reject)")


def read_jsonl(path: Path) -> list[dict]:
    """Strict: the files yolotr writes must be json that any reader parses."""
    return [
        json.loads(line, parse_constant=_reject_non_json_constant)
        for line in Path(path).read_text().splitlines()
        if line.strip()
    ]


def final_digests(run_dir: Path) -> dict[int, dict]:
    return {r["rank"]: r for r in read_jsonl(run_dir / "digests.jsonl") if r["tag"] == "end"}


def check(result: subprocess.CompletedProcess, code: int = 0) -> None:
    assert result.returncode == code, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-6000:]}"
