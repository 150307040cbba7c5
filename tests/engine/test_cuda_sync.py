"""A training step outside inspection steps never makes the host wait for the device.

On a GPU this runs under torch.cuda.set_sync_debug_mode("error"); without one, under the CPU stand-in that raises on
the same ops (yolotr/debug/sync_check.py), with the optimizer and guard code path the GPU uses (fused, found_inf).
"""

import pytest
import torch

from tests.engine.conftest import check, read_jsonl, run_train
from yolotr.debug.sync_check import HostSyncDetector, HostSyncError


@pytest.mark.parametrize(
    "nproc, launcher",
    [
        (1, "single"),
        pytest.param(2, "torchrun", marks=pytest.mark.skipif(
            torch.cuda.is_available() and torch.cuda.device_count() < 2, reason="with CUDA, two ranks need two GPUs")),
    ],
    ids=["one-process", "ddp-2-ranks"],
)
def test_steps_between_inspections_never_synchronise_and_a_nan_step_is_still_skipped(train_config, tmp_path, nproc,
                                                                                     launcher):
    # Under DDP the comm hook and the consensus parameter are in the step too.
    config = train_config(train={"max_steps": 12, "log_every": 4}, debug={"cuda_sync_check": True},
                          faults={"nan_loss_at": [[0, 6]]})
    check(run_train(config, nproc=nproc, launcher=launcher))
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r.get("event") == "skip"] == [6]
    assert [r for r in records if r["kind"] == "train"][-1]["step"] == 12


@pytest.mark.parametrize(
    "synchronising_step",
    [
        lambda t: t.sum().item(),  # reading a value back
        lambda t: t[t > 0],  # boolean-mask indexing: the output size depends on the data
        lambda t: torch.tensor([1.0, 2.0]) + t[:2],  # a tensor from Python data: a pageable host-to-device copy
        lambda t: bool(t.isfinite().all()),  # a verdict decided on the host
    ],
    ids=["item", "mask-index", "tensor-from-list", "bool"],
)
def test_the_cpu_stand_in_catches_what_would_synchronise_on_a_gpu(synchronising_step):
    with pytest.raises(HostSyncError, match="would make the host wait"), HostSyncDetector():
        synchronising_step(torch.randn(8))
