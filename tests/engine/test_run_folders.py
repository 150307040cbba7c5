"""Runs do not resume by surprise: a new `yolotr train` takes a fresh runs/<name>, runs/<name>2, ... as YOLOv5 does;
`--resume` continues a run; a restart of the same job continues its own folder; a resume with a changed recipe stops
and lists what changed."""

import json

from tests.engine.conftest import check, read_jsonl, run_train
from yolotr.checkpoint.run_folder import JOB_FILE, choose_run_folder


def _events(run_dir, name):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == name]


def test_the_same_command_again_starts_a_new_run_folder_and_resume_continues_the_newest(train_config, tmp_path):
    config = train_config(train={"max_steps": 2}, checkpoint={"resume": "none", "every": 2})
    first, second = tmp_path / "run", tmp_path / "run2"
    check(run_train(config, nproc=1, launcher="single"))
    before = (first / "metrics.jsonl").read_text()

    again = run_train(config, nproc=1, launcher="single")
    check(again)
    assert f"run folder {second}: a new run: {first} holds an earlier one" in again.stderr
    assert (first / "metrics.jsonl").read_text() == before  # the first run is untouched
    assert not _events(second, "resume")

    printed = run_train(config, "--print-config", nproc=1, launcher="single")
    assert f"dir: {tmp_path / 'run3'}" in printed.stdout  # what launch scripts read before starting

    check(run_train(config, "--resume", "train.max_steps=4", nproc=1, launcher="single"))  # `--resume` alone: auto
    assert [e["step"] for e in _events(second, "resume")] == [2] and not (tmp_path / "run3").exists()
    assert not _events(first, "resume")


def _started(folder, job, started):
    folder.mkdir(parents=True)
    (folder / JOB_FILE).write_text(json.dumps({"job": job, "started": started}))


def test_a_requeued_or_restarted_job_continues_the_folder_it_started_and_no_other(tmp_path):
    run = tmp_path / "exp"
    _started(run, "slurm:41", 1.0)
    _started(tmp_path / "exp2", "slurm:42", 2.0)
    _started(tmp_path / "exp3", "torchelastic:yolotr", 3.0)

    requeued = choose_run_folder(run, "none", {"SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": "1"})
    assert (requeued.path, requeued.resume) == (tmp_path / "exp2", "auto")
    elastic = choose_run_folder(run, "none", {"TORCHELASTIC_RUN_ID": "yolotr", "TORCHELASTIC_RESTART_COUNT": "2"})
    assert (elastic.path, elastic.resume) == (tmp_path / "exp3", "auto")
    # The first start of a job, or a restart of a job that never started a folder: a new run.
    for env in ({"SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": "0"}, {"SLURM_JOB_ID": "43", "SLURM_RESTART_COUNT": "1"},
                {}):
        fresh = choose_run_folder(run, "none", env)
        assert (fresh.path, fresh.resume) == (tmp_path / "exp4", "none")
    newest = choose_run_folder(run, "auto", {})
    assert (newest.path, newest.resume) == (tmp_path / "exp3", "auto")
    step = tmp_path / "exp2" / "checkpoints" / "step-00000004"
    step.mkdir(parents=True)
    assert choose_run_folder(run, str(step), {}).path == tmp_path / "exp2"
    (tmp_path / "exp" / "checkpoints").mkdir()
    assert (choose_run_folder(run, str(run), {}).path, choose_run_folder(run, str(run), {}).resume) == (run, "auto")


def test_resuming_with_a_changed_recipe_stops_and_lists_every_difference(train_config, tmp_path):
    config = train_config(train={"max_steps": 2}, checkpoint={"every": 2})
    check(run_train(config, nproc=1, launcher="single"))

    changed = run_train(config, "train.lr0=0.02", "augment.fliplr=0.0", "train.max_steps=4", "val.batch_size=4",
                        nproc=1, launcher="single")

    assert changed.returncode != 0
    assert "augment.fliplr: 0.5 → 0.0; train.lr0: 0.01 → 0.02. Resume with the checkpoint's values" in changed.stderr
    assert "max_steps" not in changed.stderr.split("differs from the checkpoint's")[1]  # may change, as may val.*

