"""Preemption and crashes on real torchrun ranks: SIGUSR1, kill -9 of a worker, kill -9 during a checkpoint write,
a damaged newest checkpoint, a crafted pickle."""

import contextlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.conftest import BIN, REPO, check, child_pids, descendant_pids, free_port, read_jsonl, run_train
from yolotr.checkpoint.manager import verify

pytestmark = pytest.mark.slow


def _start(config, *overrides, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"}
    cmd = [str(BIN / "torchrun"), "--nproc-per-node=2", f"--master-port={free_port()}", *extra,
           "-m", "yolotr", "train", "--config", str(config), *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"launcher exited early ({proc.returncode}):\n{proc.stdout.read()[-5000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def _train_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [r["step"] for r in read_jsonl(path) if r["kind"] == "train"] if path.stat().st_size else []
    return max(steps, default=0)


@pytest.mark.parametrize(
    "notice, num_workers",
    [(signal.SIGUSR1, 0), (signal.SIGTERM, 1)],
    ids=["sigusr1", "sigterm-with-dataloader-workers"],  # torchrun sends it to each rank's process group
)
def test_a_preemption_notice_makes_both_ranks_checkpoint_after_the_same_step_and_resume_continues(
        train_config, tmp_path, launched, notice, num_workers):
    config = train_config(train={"max_steps": 400, "num_workers": num_workers}, checkpoint={"every": 1000})
    run_dir = tmp_path / "run"
    proc = _start(config)
    launched.append(proc)
    target = random.Random().randint(3, 10)
    _wait_for(lambda: _train_step(run_dir) >= target, proc)
    proc.send_signal(notice)
    time.sleep(1.0)
    if proc.poll() is None:
        proc.send_signal(notice)  # a second notice while the first is being handled changes nothing
    proc.wait(timeout=240)
    assert proc.returncode != 0  # the launcher forwards the signal, then reports its workers' exit
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 75
    stopped_at = status["step"]
    saved = [d for d in read_jsonl(run_dir / "digests.jsonl") if d["tag"] == "checkpoint"]
    assert sorted(d["rank"] for d in saved) == [0, 1] and {d["step"] for d in saved} == {stopped_at}
    assert saved[0]["model"] == saved[1]["model"]
    assert (run_dir / "checkpoints" / f"step-{stopped_at:08d}" / "manifest.json").is_file()

    check(run_train(config, "--resume", "auto", "train.max_steps=" + str(stopped_at + 3)))
    resume = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "resume"][-1]
    assert resume["step"] == stopped_at
    assert _train_step(run_dir) == stopped_at + 3


def test_a_notice_during_start_up_is_kept_and_the_first_step_checkpoints_and_exits_75(train_config, tmp_path):
    # Before the first step (the run folder is being set up) the process used to have SIGUSR1's default action:
    # killed, nothing written, and Slurm would not requeue. The notice now waits for the first step's consensus.
    config = train_config(train={"max_steps": 400})
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "yolotr", "train", "--config", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for(run_dir.is_dir, proc)  # made before the model and the data stream are set up
        proc.send_signal(signal.SIGUSR1)
        output = proc.communicate(timeout=240)[0]
    finally:
        proc.kill()
    assert proc.returncode == 75, output[-3000:]
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 75 and status["step"] <= 2  # the step under way when the notice came, or the next
    assert verify(run_dir / "checkpoints" / f"step-{status['step']:08d}") is None


def test_kill_9_of_one_worker_restarts_resumes_and_completes(train_config, tmp_path, launched):
    config = train_config(train={"max_steps": 30}, checkpoint={"every": 4})
    run_dir = tmp_path / "run"
    port = free_port()
    proc = _start(config, extra=("--max-restarts=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                                 "--nnodes=1:1"))
    launched.append(proc)
    _wait_for(lambda: (run_dir / "checkpoints" / "latest").exists() and _train_step(run_dir) >= 6, proc)
    os.kill(random.choice(child_pids(proc.pid)), signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-5000:]
    records = read_jsonl(run_dir / "metrics.jsonl")
    resumes = [r for r in records if r.get("event") == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] >= 4 and resumes[0]["step"] % 4 == 0
    assert _train_step(run_dir) == 30
    assert [r for r in records if r.get("event") == "stop"][-1]["exit_code"] == 0


def test_kill_during_a_checkpoint_write_leaves_the_previous_one_and_damage_falls_back(train_config, tmp_path, launched):
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    config = train_config(train={"max_steps": 8}, checkpoint={"every": 4})
    check(run_train(config))  # commits step 4 and step 8

    proc = _start(config, "train.max_steps=16", "faults.pause_checkpoint_write_s=120")
    launched.append(proc)
    _wait_for(lambda: (ckpts / "step-00000012.tmp" / "trainer.json").exists(), proc)
    time.sleep(0.5)
    # The whole job, in the middle of the save of step 12: the launcher starts its ranks in sessions of their own, so
    # its process group alone would leave them writing on. Every process, at once, as a lost node loses them.
    for pid in [proc.pid, *descendant_pids(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert (ckpts / "step-00000012.tmp").is_dir() and not (ckpts / "step-00000012").exists()
    assert (ckpts / "latest").read_text().strip() == "step-00000008"

    check(run_train(config, "train.max_steps=16"))
    resumes = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "resume"]
    assert resumes[-1]["step"] == 8
    assert (ckpts / "step-00000016" / "manifest.json").is_file()

    # Damage the newest checkpoint: the next start warns and falls back to step 12.
    victim = next(p for p in (ckpts / "step-00000016" / "state").iterdir() if p.suffix == ".distcp")
    victim.write_bytes(victim.read_bytes()[:-10] + b"corruption")
    check(run_train(config, "train.max_steps=16"))
    records = read_jsonl(run_dir / "metrics.jsonl")
    fallback = [r for r in records if r.get("event") == "checkpoint_fallback"]
    assert fallback and "step-00000016" in fallback[-1]["message"] and "sha256" in fallback[-1]["message"]
    assert "resuming from step-00000012" in fallback[-1]["message"]
    resume = [r for r in records if r.get("event") == "resume"][-1]
    assert resume["step"] == 12
    # The damaged one is moved aside, not deleted, and not picked again; the resumed run's own step 16 is committed.
    assert (ckpts / "damaged" / "step-00000016" / "manifest.json").is_file()
    assert verify(ckpts / "step-00000016") is None


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/yolotr-pwned",))


def test_a_crafted_pickle_in_a_checkpoint_is_refused(train_config, tmp_path):
    from yolotr.checkpoint.manager import _sha256

    config = train_config(train={"max_steps": 2}, checkpoint={"every": 2})
    check(run_train(config, nproc=1))
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    rank_file = ckpt / "rank-00000.pt"
    rank_file.write_bytes(pickle.dumps({"torch": _Exploit()}))
    manifest = json.loads((ckpt / "manifest.json").read_text())  # an attacker fixes the manifest too
    manifest["files"]["rank-00000.pt"] = {"size": rank_file.stat().st_size, "sha256": _sha256(rank_file)}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    Path("/tmp/yolotr-pwned").unlink(missing_ok=True)

    result = run_train(config, "train.max_steps=4", nproc=1, launcher="single")
    assert result.returncode != 0
    assert "refused" in result.stderr and "rank-00000.pt" in result.stderr
    assert not Path("/tmp/yolotr-pwned").exists()


def test_export_weights_from_a_run_gives_a_file_that_val_takes(train_config, tmp_path, tiny_data):
    import subprocess as sp

    from yolotr.checkpoint.weights_file import load_weights

    config = train_config(train={"max_steps": 2}, checkpoint={"every": 2})
    check(run_train(config, nproc=1, launcher="single"))
    out = tmp_path / "w.safetensors"
    cmd = [str(BIN / "python"), "-m", "yolotr", "export-weights", str(tmp_path / "run"), "--out", str(out)]
    result = sp.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = load_weights(out)
    assert loaded.names == ["circle", "square", "triangle", "cross"]
    val = sp.run([str(BIN / "python"), "-m", "yolotr", "val", "--weights", str(out), "--data", str(tiny_data),
                  "--imgsz", "64", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert val.returncode == 0, val.stderr
    assert {"map50", "map"} <= set(json.loads(val.stdout.strip().splitlines()[-1]))


def test_a_preemption_at_the_end_of_an_epoch_validates_that_epoch_after_the_resume(train_config, tmp_path):
    # 96 samples, batch 8: step 12 ends epoch 0, whose validation is due then. Preempted there, the run checkpoints
    # first; the validation (and its fitness for best.safetensors) must not be lost with the restart.
    config = train_config(train={"max_steps": 24}, val={"every_epochs": 1, "batch_size": 8})
    preempted = run_train(config, "faults.preempt_at_step=12", nproc=1, launcher="single")
    assert preempted.returncode == 75, preempted.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "exit.json").read_text())["step"] == 12
    check(run_train(config, nproc=1, launcher="single"))
    vals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "val"]
    assert [(r["step"], r["epoch"]) for r in vals if not r["final"]] == [(12, 0), (24, 1)]
