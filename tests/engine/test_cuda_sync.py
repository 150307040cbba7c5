"""On a GPU, a training step outside inspection steps never synchronises with the host (skipped without a GPU)."""

import pytest
import torch

from tests.engine.conftest import check, read_jsonl, run_train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_steps_between_inspections_run_under_sync_debug_mode_error(train_config, tmp_path):
    config = train_config(train={"max_steps": 12, "log_every": 4}, debug={"cuda_sync_check": True},
                          faults={"nan_loss_at": [[0, 6]]})
    check(run_train(config, nproc=1, launcher="single"))
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r.get("event") == "skip"] == [6]
    assert [r for r in records if r["kind"] == "train"][-1]["step"] == 12
