"""A rank whose whole local batch is corrupt gets an empty batch: every rank skips that step, identically."""

import shutil
import tarfile

import pytest

from tests.engine.conftest import check, final_digests, read_jsonl, run_train
from yolotr.data.spec import load_data_yaml

pytestmark = pytest.mark.slow

STEP, RANK = 3, 1


def _corrupt(data_yaml, keys: set[str], out):
    shutil.copytree(data_yaml.parent, out)
    split = load_data_yaml(out / "data.yaml").train
    for i, key in enumerate(split.keys):
        if key not in keys:
            continue
        shard = split.shard_path(int(split.shard_of[i]))
        with tarfile.open(shard) as tar:
            member = tar.getmember(f"{key}.jpg")
        with open(shard, "r+b") as fh:  # same size: the index stays valid, the image does not
            fh.seek(member.offset_data)
            fh.write(b"not a jpeg".ljust(member.size, b" "))
    return out / "data.yaml"


def test_an_emptied_local_batch_makes_every_rank_skip_the_step(train_config, tiny_data, tmp_path):
    # Which samples rank 1 trains on at step 3 (the order is a pure function of seed, epoch and position).
    clean = train_config(run={"dir": str(tmp_path / "clean")}, debug={"sample_ledger": True, "rank_digests": True})
    check(run_train(clean))
    ledger = read_jsonl(tmp_path / "clean" / "ledger.jsonl")
    victims = {r["key"] for r in ledger if r["step"] == STEP and r["rank"] == RANK}
    assert len(victims) == 4  # the whole local batch (global 8 over 2 ranks)

    data = _corrupt(tiny_data, victims, tmp_path / "damaged")
    config = train_config(data=str(data), train={"max_data_error_fraction": 0.1})
    result = run_train(config)
    check(result)

    run_dir = tmp_path / "run"
    skips = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "skip"]
    assert [s["step"] for s in skips] == [STEP] and skips[0]["bad_ranks"] == [RANK]
    digests = final_digests(run_dir)
    assert digests[0]["model"] == digests[1]["model"] and digests[0]["optimizer"] == digests[1]["optimizer"]
    assert all(f"skipped corrupt sample {key}" in result.stderr for key in victims)
    train = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert train[-1]["step"] == 8 and train[-1]["skipped_steps"] == 1
