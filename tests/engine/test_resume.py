"""Crash, resume, resize: the run comes back at the exact step and the exact data position."""

import collections
import csv
import json
import os
import subprocess
import sys

import pytest

from tests.engine.conftest import REPO, check, final_digests, read_jsonl, run_train

pytestmark = pytest.mark.slow


def test_crash_then_resume_on_the_same_world_size_ends_bitwise_equal_to_an_uninterrupted_run(train_config, tmp_path):
    reference = train_config(run={"dir": str(tmp_path / "reference")}, checkpoint={"every": 2})
    check(run_train(reference))

    config = train_config(checkpoint={"every": 2})
    crashed = run_train(config, "faults.exit_at_step=5")
    assert crashed.returncode != 0
    check(run_train(config))

    resumed, uninterrupted = final_digests(tmp_path / "run"), final_digests(tmp_path / "reference")
    assert resumed[0]["model"] == uninterrupted[0]["model"]
    assert resumed[0]["optimizer"] == uninterrupted[0]["optimizer"]
    assert resumed[1] == {**uninterrupted[1]}
    resume = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 4


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)], ids=["2-to-1-ranks", "1-to-2-ranks"])
def test_resume_on_another_world_size_keeps_optimizer_state_and_trains_each_sample_once(train_config, tmp_path, before, after):
    # 96 samples, global batch 8: one epoch is 12 steps; the crash after step 5 loses step 5 (checkpoint at 4).
    config = train_config(train={"max_steps": 12}, checkpoint={"every": 2}, debug={"sample_ledger": True, "rank_digests": True})
    crashed = run_train(config, "faults.exit_at_step=5", nproc=before)
    assert crashed.returncode != 0
    check(run_train(config, nproc=after))
    run_dir = tmp_path / "run"

    digests = read_jsonl(run_dir / "digests.jsonl")
    saved = [d for d in digests if d["tag"] == "checkpoint" and d["step"] == 4 and d["rank"] == 0][0]
    loaded = [d for d in digests if d["tag"] == "resume"]
    assert len(loaded) == after
    assert all(d["optimizer"] == saved["optimizer"] and d["model"] == saved["model"] for d in loaded)

    resume = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "resume"][0]
    assert (resume["old_world_size"], resume["new_world_size"]) == (before, after)

    ledger = read_jsonl(run_dir / "ledger.jsonl")
    per_key = collections.Counter(line["key"] for line in ledger if line["epoch"] == 0)
    assert len(per_key) == 96 and set(per_key.values()) == {1}
    steps = collections.Counter(line["step"] for line in ledger)
    assert sorted(steps) == list(range(1, 13)) and set(steps.values()) == {8}
    assert {line["rank"] for line in ledger if line["step"] > 4} == set(range(after))


def test_deepspeed_zero2_resume_from_2_to_1_rank_goes_through_a_universal_checkpoint(train_config, tmp_path):
    # AdamW: DeepSpeed's universal converter only knows Adam moments (SGD is refused with a clear message).
    config = train_config(train={"max_steps": 12, "optimizer": "adamw", "lr0": 0.001}, checkpoint={"every": 2}, debug={"sample_ledger": True, "rank_digests": True})
    crashed = run_train(config, "faults.exit_at_step=5", nproc=2, launcher="deepspeed")
    assert crashed.returncode != 0
    check(run_train(config, nproc=1, launcher="deepspeed"))
    run_dir = tmp_path / "run"

    digests = read_jsonl(run_dir / "digests.jsonl")
    saved = [d for d in digests if d["tag"] == "checkpoint" and d["step"] == 4]
    loaded = [d for d in digests if d["tag"] == "resume"]
    assert len(saved) == 2 and len(loaded) == 1
    # The ZeRO partitions of 2 ranks, regrouped into 1: the same moments (summed over all partitions), same weights.
    assert loaded[0]["optimizer_sum"] == pytest.approx(saved[0]["optimizer_sum"], rel=1e-6)
    assert loaded[0]["optimizer_sum"] != 0.0
    assert loaded[0]["model"] == saved[0]["model"]
    assert (run_dir / "universal" / "step-00000004").is_dir()

    ledger = read_jsonl(run_dir / "ledger.jsonl")
    per_key = collections.Counter(line["key"] for line in ledger if line["epoch"] == 0)
    assert len(per_key) == 96 and set(per_key.values()) == {1}
    assert _train_steps(run_dir)[-1] == 12


def _train_steps(run_dir):
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_a_checkpoint_holds_only_steps_the_guard_has_judged(train_config, tmp_path):
    # The guard reads its verdicts every 4 steps (as on a GPU), a checkpoint is due at step 3, step 2 is non-finite:
    # the save first judges steps 1-3, so the checkpoint counts step 2 as skipped and the LR schedule as 2 steps on.
    config = train_config(guard={"check_every": 4}, checkpoint={"every": 3}, faults={"nan_loss_at": [[0, 2]]})
    crashed = run_train(config, "faults.exit_at_step=3", nproc=1, launcher="single")
    assert crashed.returncode != 0
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step-00000003" / "trainer.json").read_text())
    assert meta["counters"]["applied_steps"] == 2 and meta["counters"]["ema_updates"] == 2
    assert meta["guard"]["skipped_steps"] == 1

    check(run_train(config, nproc=1, launcher="single"))
    train = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert train[-1]["step"] == 8 and train[-1]["skipped_steps"] == 1


def test_resuming_an_earlier_checkpoint_sets_the_later_ones_aside_so_they_are_neither_pruned_nor_picked(
        train_config, tmp_path):
    # With TensorBoard and results.csv: both must show each step once after two resumes (checked at the end).
    config = train_config(checkpoint={"every": 2, "keep_last": 3}, log={"tensorboard": True, "results_csv": True})
    check(run_train(config, nproc=1, launcher="single"))  # steps 4, 6, 8
    ckpts = tmp_path / "run" / "checkpoints"
    # Back to step 4 (e.g. to retry from there), saving every step and keeping 2, then a crash after step 5.
    crashed = run_train(config, "--resume", str(ckpts / "step-00000004"), "checkpoint.every=1",
                        "checkpoint.keep_last=2", "faults.exit_at_step=5", nproc=1, launcher="single")
    assert crashed.returncode != 0
    assert [p.name for p in sorted(ckpts.glob("step-*"))] == ["step-00000004", "step-00000005"]
    assert sorted(p.name for p in (ckpts / "abandoned").iterdir()) == ["step-00000006", "step-00000008"]
    assert (ckpts / "latest").read_text().strip() == "step-00000005"

    check(run_train(config, nproc=1, launcher="single"))  # --resume auto: the crashed run's own newest
    resume = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "resume"][-1]
    assert resume["step"] == 5

    _check_tensorboard_and_results_csv_hold_each_step_once(tmp_path / "run", resumed_at=[4, 5])


def _check_tensorboard_and_results_csv_hold_each_step_once(run_dir, resumed_at):
    """Three attempts wrote into run_dir: steps 1-8 with a validation at 8, then 5 (resumed at 4), then 6-8 and a
    validation at 8 (resumed at 5). metrics.jsonl keeps each step once; TensorBoard (read back by its own
    EventAccumulator) and results.csv (by the csv module) must show the same records, each once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 9)) and [r["step"] for r in val] == [8]

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 9))
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert [e.step for e in events.Scalars("val/map50")] == [8]  # the first attempt's validation at 8 is hidden
    assert events.Scalars("val/map50")[0].value == pytest.approx(val[0]["map50"], rel=1e-6)
    assert {"train/lr/cnn/weight", "train/grad_norm", "val/map", "val/precision"} <= set(events.Tags()["scalars"])
    # Each resumed attempt asked TensorBoard to hide what an earlier one wrote after its checkpoint (purge_step).
    purges = []
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        starts = [e.step for e in EventFileLoader(str(path)).Load() if e.HasField("session_log")]
        purges += starts
    assert purges == [step + 1 for step in resumed_at]

    with open(run_dir / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["epoch"], row["step"]) for row in rows] == [("0", "8")]  # not the first attempt's row as well
    row = rows[0]
    assert float(row["metrics/mAP_0.5"]) == pytest.approx(val[0]["map50"], rel=1e-5, abs=1e-9)
    assert float(row["metrics/mAP_0.5:0.95"]) == pytest.approx(val[0]["map"], rel=1e-5, abs=1e-9)
    assert float(row["fitness"]) == pytest.approx(val[0]["fitness"], rel=1e-5, abs=1e-9)
    mean_loss = sum(r["loss"] * r["images"] for r in train) / sum(r["images"] for r in train)
    assert float(row["train/loss"]) == pytest.approx(mean_loss, rel=1e-5)
    assert float(row["lr/cnn/weight"]) == pytest.approx(train[-1]["lr"][train[-1]["lr_groups"].index("cnn/weight")],
                                                          rel=1e-5)


def test_a_resume_with_another_optimizer_or_model_is_refused_naming_what_changed(train_config, tmp_path, tiny_model):
    config = train_config(checkpoint={"every": 4}, train={"max_steps": 4})
    check(run_train(config, nproc=1, launcher="single"))

    other_optimizer = run_train(config, "train.optimizer=adamw", "train.max_steps=6", nproc=1, launcher="single")
    assert other_optimizer.returncode != 0
    assert "written with train.optimizer=sgd, this run has adamw" in other_optimizer.stderr

    wider = tmp_path / "wider.yaml"
    wider.write_text(tiny_model.read_text().replace("width_multiple: 0.125", "width_multiple: 0.25"))
    other_model = run_train(config, f"model={wider}", "train.max_steps=6", nproc=1, launcher="single")
    assert other_model.returncode != 0
    assert "does not fit this run's model or optimizer" in other_model.stderr


def test_weight_decay_changed_on_resume_is_the_new_runs(train_config, tmp_path):
    # The optimizer's param groups come back from the checkpoint; weight decay (not set by the schedule) must be
    # the resumed run's. Read from a trainer built and resumed in a fresh process.
    config = train_config(checkpoint={"every": 4}, train={"max_steps": 4})
    check(run_train(config, nproc=1, launcher="single"))
    script = (
        "import sys, json\n"
        "from yolotr.config import load_config\n"
        "from yolotr.engine.runtime import setup_runtime\n"
        "from yolotr.engine.trainer import Trainer\n"
        "cfg = load_config(sys.argv[1], ['train.weight_decay=0.05'])\n"
        "trainer = Trainer(cfg, setup_runtime(cfg))\n"
        "trainer.start()\n"
        "print(json.dumps([trainer.step, sorted({g['weight_decay'] for g in trainer.optimizer.param_groups})]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(config)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    step, decays = json.loads(result.stdout.strip().splitlines()[-1])
    assert step == 4 and decays == [0.0, 0.05]  # no decay on norms and biases, the new value on the weights
