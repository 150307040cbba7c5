"""Gradient accumulation to the nominal batch across real ranks, and the run folder a user opens afterwards."""

import collections

import pytest
from PIL import Image

from tests.engine.conftest import check, final_digests, read_jsonl, run_train

pytestmark = pytest.mark.slow


def test_accumulating_two_micro_batches_per_step_trains_the_nominal_batch_and_keeps_ranks_equal(train_config, tmp_path):
    config = train_config(
        train={"max_steps": 3, "batch_size": 8, "nominal_batch_size": 16},
        debug={"sample_ledger": True, "rank_digests": True},
    )
    check(run_train(config))
    run_dir = tmp_path / "run"
    start = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "start"][0]
    assert start["accumulate"] == 2
    per_step = collections.Counter(line["step"] for line in read_jsonl(run_dir / "ledger.jsonl"))
    assert per_step == {1: 16, 2: 16, 3: 16}
    digests = final_digests(run_dir)
    assert digests[0]["model"] == digests[1]["model"] and digests[0]["optimizer"] == digests[1]["optimizer"]

    for name in ["results.png", "PR_curve.png", "train_batch0.jpg", "val_pred.jpg", "labels.jpg"]:
        with Image.open(run_dir / name) as image:
            image.verify()
    assert (run_dir / "config.yaml").read_text().startswith("model:")
    assert (run_dir / "weights" / "last.safetensors").stat().st_size > 0


@pytest.mark.parametrize("check_every", [1, 4], ids=["judged-every-step", "judged-every-4-steps"])
def test_images_per_s_counts_the_images_and_the_time_of_its_own_record(train_config, tmp_path, check_every):
    # log_every 2 with check_every 4: the step-2 log has nothing judged yet, so the step-4 record covers steps 1-4.
    config = train_config(train={"max_steps": 12, "log_every": 2}, guard={"check_every": check_every})
    check(run_train(config, nproc=1, launcher="single"))
    train = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    every = max(check_every, 2)
    assert [r["step"] for r in train] == list(range(every, 13, every))
    for before, record in zip(train[1:], train[2:]):
        images = 8 * (record["step"] - before["step"])  # batch 8, one process
        measured = record["images_per_s"] * (record["time"] - before["time"])
        assert 0.5 < measured / images < 2, (before, record)
    # In-process batches (num_workers 0): building each is part of the wait, and never all of the window.
    assert all(0 < r["data_wait"] < 1 for r in train), [r["data_wait"] for r in train]
