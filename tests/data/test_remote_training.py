"""Training runs whose shards are behind a real HTTP server or in a real S3 server (moto's, on 127.0.0.1): to
completion, through a server gone mid-epoch (exit 69 with a checkpoint, then a resume), and a 2-rank run killed with
kill -9 mid-epoch and resumed on 1 rank with every sample trained exactly once (the sample ledger)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.data.remote_servers import http_server, s3_holding, synth_shard_set
from tests.engine.conftest import (BIN, REPO, check, descendant_pids, free_port, read_jsonl, run_train, tiny_model,
                                   write_train_config)

pytestmark = pytest.mark.slow
__all__ = ["tiny_model"]  # a fixture, used by name


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory) -> Path:
    """96 train images in 12 shards of 8, 16 val images: several shard windows per epoch."""
    return synth_shard_set(tmp_path_factory.mktemp("remote-train-set"), train=96, val=16)


@pytest.fixture(scope="module")
def s3(shard_set):
    with s3_holding(shard_set, free_port()) as endpoint:
        yield endpoint


def remote_config(tmp_path: Path, data: str, model: Path, **sections) -> Path:
    remote = {"cache_dir": str(tmp_path / "cache"), "retry_budget_s": 30.0, "timeout_s": 5.0, **sections.pop("remote", {})}
    debug = {"sample_ledger": True, "rank_digests": True, **sections.pop("debug", {})}
    train = {"max_steps": 12, **sections.pop("train", {})}
    return write_train_config(tmp_path, data, model, remote=remote, debug=debug, train=train,
                              checkpoint={"every": 2, "keep_last": 3, "resume": "auto"}, **sections)


def epoch_0_keys(run_dir: Path) -> collections.Counter:
    return collections.Counter(line["key"] for line in read_jsonl(run_dir / "ledger.jsonl") if line["epoch"] == 0)


def test_a_run_from_http_trains_to_completion_each_shard_downloaded_once(shard_set, tmp_path, tiny_model):
    with http_server(shard_set) as server:
        config = remote_config(tmp_path, f"{server.url}/data.yaml", tiny_model)
        check(run_train(config, nproc=1))
        shard_gets = [p for p in server.requests if p.endswith(".tar")]
        validated = subprocess.run([sys.executable, "-m", "yolotr", "val", "--weights",
                                    str(tmp_path / "run" / "weights" / "last.safetensors"), "--data",
                                    f"{server.url}/data.yaml"], cwd=REPO, capture_output=True, text=True, timeout=300,
                                   env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "val-cache")})
        assert validated.returncode == 0, validated.stderr[-3000:]
        assert "mAP" in validated.stdout or "map" in validated.stdout, validated.stdout[-2000:]
    counts = epoch_0_keys(tmp_path / "run")
    assert len(counts) == 96 and set(counts.values()) == {1}
    assert sorted(shard_gets) == sorted(set(shard_gets)) and len(shard_gets) == 12 + 2  # 12 train shards, 2 val
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r for r in records if r.get("event") == "stop"][-1]["exit_code"] == 0


def test_a_run_from_s3_trains_to_completion(s3, tmp_path, tiny_model):
    config = remote_config(tmp_path, "s3://datasets/synth/data.yaml", tiny_model)
    check(run_train(config, nproc=1))
    counts = epoch_0_keys(tmp_path / "run")
    assert len(counts) == 96 and set(counts.values()) == {1}
    assert len(list((tmp_path / "cache").glob("*.tar"))) == 12 + 2


def test_a_server_gone_mid_epoch_stops_with_a_checkpoint_and_exit_69_then_the_run_resumes(shard_set, tmp_path,
                                                                                        tiny_model):
    with http_server(shard_set) as server:
        server.faults.down_after_shards = 4  # the first shard windows arrive, then the server goes away
        config = remote_config(tmp_path, f"{server.url}/data.yaml", tiny_model,
                               remote={"retry_budget_s": 2.0, "prefetch_shards": 0},
                               train={"autoanchor": False})  # AutoAnchor would read every label at the start
        stopped = run_train(config, "train.max_steps=12", launcher="single")  # its own exit code
        assert stopped.returncode == 69, stopped.stderr[-4000:]
        status = json.loads((tmp_path / "run" / "exit.json").read_text())
        assert status["exit_code"] == 69 and "unreachable for 2s" in status["reason"], status
        assert 0 < status["step"] < 12
        assert (tmp_path / "run" / "checkpoints" / f"step-{status['step']:08d}").is_dir()  # the position, saved
        traceback_lines = [line for line in stopped.stderr.splitlines() if line.startswith("Traceback")]
        assert not traceback_lines, stopped.stderr[-3000:]

        server.faults.down, server.faults.down_after_shards = False, None  # the storage is back: the retry
        check(run_train(config, nproc=1))
    counts = epoch_0_keys(tmp_path / "run")
    assert len(counts) == 96 and set(counts.values()) == {1}


def _train_step(run_dir: Path) -> int:
    try:
        return max((r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "train"), default=0)
    except (OSError, ValueError):
        return 0


def test_a_2_rank_run_from_s3_killed_with_kill_9_mid_epoch_resumes_on_1_rank_each_sample_once(s3, tmp_path,
                                                                                            tiny_model):
    config = remote_config(tmp_path, "s3://datasets/synth/data.yaml", tiny_model, train={"max_steps": 400})
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([str(BIN / "torchrun"), "--nproc-per-node=2", f"--master-port={free_port()}", "-m",
                             "yolotr", "train", "--config", str(config), "train.max_steps=12"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not (
                (run_dir / "checkpoints" / "step-00000004").is_dir() and _train_step(run_dir) >= 5):
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        for pid in [proc.pid, *descendant_pids(proc.pid)]:  # the whole node, at once
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _train_step(run_dir) < 12  # killed mid-epoch

    check(run_train(config, "train.max_steps=12", nproc=1))
    resume = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "resume"][-1]
    assert (resume["old_world_size"], resume["new_world_size"]) == (2, 1)
    ledger = read_jsonl(run_dir / "ledger.jsonl")
    counts = collections.Counter(line["key"] for line in ledger if line["epoch"] == 0)
    assert len(counts) == 96 and set(counts.values()) == {1}
    steps = collections.Counter(line["step"] for line in ledger)
    assert sorted(steps) == list(range(1, 13)) and set(steps.values()) == {8}
