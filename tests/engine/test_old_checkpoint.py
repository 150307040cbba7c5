"""A checkpoint written by yolotr 0.1.0 (commit 4ac1143, before the engine was reorganised) still resumes exactly.

The fixture in tests/fixtures/run_v0_1_0 was made with that commit: a ~18k-parameter model (tiny.yaml) on 24 synthetic
images, SGD, batch 4, a NaN loss at step 2 (skipped, its 4 keys quarantined), killed by `faults.exit_at_step=4` right
after the step-4 checkpoint. `digests.jsonl` holds that run's sha256 of the model, optimizer and EMA at the
checkpoint; `expected_ledger_after_resume.jsonl` the samples an uninterrupted run of the same code trained at steps
5 and 6. How it was made: `yolotr data synth --out data --train 24 --val 8 --classes 3 --imgsz 64 --seed 0
--samples-per-shard 12`, then `yolotr train --config train.yaml faults.exit_at_step=4`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.engine.conftest import check, read_jsonl, run_train

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_v0_1_0"


def _copy_fixture(tmp_path: Path) -> Path:
    work = tmp_path / "run_v0_1_0"
    shutil.copytree(FIXTURE, work)
    # Paths in the fixture are relative to its folder: point the config there from the repository root.
    config = work / "train.yaml"
    text = config.read_text()
    text = text.replace("model: tiny.yaml", f"model: {work / 'tiny.yaml'}")
    text = text.replace("data: data/data.yaml", f"data: {work / 'data' / 'data.yaml'}")
    text = text.replace("run: {dir: run,", f"run: {{dir: {work / 'run'},")
    config.write_text(text)
    return work


def test_a_checkpoint_of_version_0_1_0_resumes_bitwise_at_its_step_and_data_position(tmp_path):
    work = _copy_fixture(tmp_path)
    old_digest = next(r for r in read_jsonl(work / "run" / "digests.jsonl") if r["tag"] == "checkpoint")

    result = run_train(work / "train.yaml", "checkpoint.resume=auto", launcher="single")

    check(result)
    records = read_jsonl(work / "run" / "metrics.jsonl")
    resume = next(r for r in records if r.get("event") == "resume")
    assert resume["step"] == 4 and resume["code_version"].startswith("0.1.0+4ac1143")
    # The state that was loaded is bitwise the state the old code saved.
    loaded = next(r for r in read_jsonl(work / "run" / "digests.jsonl") if r["tag"] == "resume")
    for part in ("model", "optimizer", "ema"):
        assert loaded[part] == old_digest[part], part
    # The data position, and the quarantine of the step-2 keys, carried over: steps 5 and 6 trained exactly the
    # samples the uninterrupted run trained.
    expected = read_jsonl(FIXTURE / "expected_ledger_after_resume.jsonl")
    resumed = [r for r in read_jsonl(work / "run" / "ledger.jsonl") if r["step"] > 4]
    assert resumed == expected
    quarantined = set(json.loads((FIXTURE / "run" / "quarantine.json").read_text()))
    assert not quarantined & {r["key"] for r in resumed}
    last_train = [r for r in records if r["kind"] == "train"][-1]
    assert last_train["step"] == 6 and last_train["skipped_steps"] == 1
