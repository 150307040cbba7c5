"""Two real ranks (torchrun, gloo): a NaN on one rank makes *both* skip the same step, bitwise as a clean skip."""

import pytest

from tests.engine.conftest import check, final_digests, read_jsonl, run_train

pytestmark = pytest.mark.slow


def _events(run_dir, name):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "event" and r.get("event") == name]


@pytest.fixture
def reference_skip_3(train_config, tmp_path):
    """A run told to skip step 3 without any NaN: what every faulty run must end up equal to."""
    config = train_config(run={"dir": str(tmp_path / "reference")}, faults={"skip_steps": [3]})
    check(run_train(config))
    return final_digests(tmp_path / "reference")


@pytest.mark.parametrize(
    "fault, bad_rank",
    [({"nan_grad_at": [[1, 3]]}, 1), ({"nan_loss_at": [[0, 3]]}, 0)],
    ids=["nan-grad-on-rank-1", "nan-loss-on-rank-0"],
)
def test_one_bad_rank_makes_every_rank_skip_and_equals_a_clean_skip(train_config, tmp_path, reference_skip_3, fault, bad_rank):
    config = train_config(faults=fault)
    check(run_train(config))
    run_dir = tmp_path / "run"

    digests = final_digests(run_dir)
    assert set(digests) == {0, 1}
    assert digests[0]["model"] == digests[1]["model"] and digests[0]["optimizer"] == digests[1]["optimizer"]
    # Each rank's EMA averages its own batch's BatchNorm statistics; they are broadcast from rank 0 before a save,
    # a validation or a digest, so every rank holds the same EMA.
    assert digests[0]["ema"] is not None and digests[0]["ema"] == digests[1]["ema"]
    assert digests[0]["model"] == reference_skip_3[0]["model"]
    assert digests[0]["optimizer"] == reference_skip_3[0]["optimizer"]

    skips = _events(run_dir, "skip")
    assert [s["step"] for s in skips] == [3]
    assert skips[0]["bad_ranks"] == [bad_rank]
    assert len(skips[0]["bad_keys"][str(bad_rank)]) == 4  # the 4 samples of that rank's batch
    train = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert train[-1]["skipped_steps"] == 1 and train[-1]["step"] == 8
    [step_3] = [r for r in train if r["step"] == 3]  # log_every 1: a window of one skipped step
    assert step_3["loss"] is None and step_3["grad_norm"] is None  # no loss to report; the skip event says why


def test_under_deepspeed_zero2_a_nan_on_one_rank_is_skipped_by_both(train_config, tmp_path):
    config = train_config(faults={"nan_grad_at": [[1, 3]]})
    check(run_train(config, launcher="deepspeed"))
    run_dir = tmp_path / "run"
    skips = _events(run_dir, "skip")
    assert [s["step"] for s in skips] == [3]
    assert skips[0]["bad_ranks"] == [1]  # DeepSpeed reduces in its own hooks: a tensor hook saw rank 1's gradient
    digests = final_digests(run_dir)
    assert digests[0]["model"] == digests[1]["model"]
    assert digests[0]["optimizer_sum"] == digests[1]["optimizer_sum"]


def test_anomaly_hooks_name_the_module_where_a_non_finite_forward_started(train_config, tmp_path):
    config = train_config(faults={"nan_forward_at": [[1, 2]]}, debug={"anomaly_hooks": True, "rank_digests": True})
    check(run_train(config))
    skip = _events(tmp_path / "run", "skip")[0]
    assert skip["step"] == 2 and skip["bad_ranks"] == [1]
    module = skip["bad_modules"]["1"]
    assert module.startswith("model.8")  # the C3TR of yolotr-n (layer 8), not a later layer
    digests = final_digests(tmp_path / "run")
    assert digests[0]["model"] == digests[1]["model"]


def test_a_non_finite_forward_on_rank_0_leaves_no_trace_in_the_batchnorm_statistics(train_config, tmp_path):
    # DDP broadcasts rank 0's BatchNorm statistics to every rank at each forward: statistics that the skipped step
    # did not put back would spread its NaN. Put back, the run equals a run told to skip that step.
    reference = train_config(run={"dir": str(tmp_path / "reference")}, faults={"skip_steps": [2]})
    check(run_train(reference))
    check(run_train(train_config(faults={"nan_forward_at": [[0, 2]]})))
    ours, clean = final_digests(tmp_path / "run"), final_digests(tmp_path / "reference")
    assert [s["step"] for s in _events(tmp_path / "run", "skip")] == [2]
    assert ours[0]["model"] == ours[1]["model"] == clean[0]["model"]
