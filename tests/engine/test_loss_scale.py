"""fp16's loss scale in one process: the guard's verdict is the scaler's found_inf, so a scaler skip and a guard skip
are one decision, the scale backs off on the device, and the step never makes the host wait (the GPU's fused path,
checked on a CPU by the stand-in and on a GPU by torch's sync check)."""

import json
import math

import pytest
import torch
from torch import nn

from tests.engine.conftest import check, final_digests, read_jsonl, run_train

from yolotr.debug.sync_check import no_host_sync
from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.config.run import GuardConfig
from yolotr.guard.consensus import ConsensusPayload
from yolotr.guard.loss_scale import LossScale
from yolotr.guard.monitor import GuardMonitor, PendingStep
from yolotr.guard.step import BufferGuard, guarded_step

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
INIT_SCALE = 2.0**16  # GradScaler's default


def _model(device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 4)).to(device)


class Fp16Step:
    """The DDP backend's order of operations: scaled backward, unscale, guarded step, scale update."""

    def __init__(self, device: torch.device, fused: bool | None):
        self.device = device
        self.model = _model(device)
        self.optimizer = build_optimizer(build_param_groups(self.model, 5e-4, 0.2), "sgd", 0.01, 0.9, fused=fused)
        self.scale = LossScale(device, enabled=True)
        self.buffers = BufferGuard(self.model)
        self.params = list(self.model.parameters())

    def __call__(self, x, *, inf_grad=False, force=False):
        before = self.buffers.save()
        with torch.autocast(self.device.type, dtype=torch.float16):
            out = self.model(x)
        self.scale.scale(out.float().square().mean()).backward()
        if inf_grad:  # an overflow in one gradient, as fp16's backward makes it
            self.params[0].grad.view(-1)[:1].fill_(float("inf"))  # a fill kernel: no host-to-device copy
        self.scale.unscale_(self.optimizer)
        force_skip = torch.full((), force, dtype=torch.bool, device=self.device)
        norm, skipped = guarded_step(self.params, self.optimizer, max_norm=1.0, images=1, force_skip=force_skip,
                                     buffers=self.buffers, buffers_before=before)
        self.scale.update(self.optimizer, skipped)
        self.optimizer.zero_grad(set_to_none=True)
        return norm, skipped


@pytest.mark.parametrize("fused", [True, None], ids=["fused-found_inf", "plain-not-stepped"])
def test_an_overflowed_fp16_step_is_skipped_and_backs_the_scale_off_and_a_clean_one_steps_unscaled(fused):
    step = Fp16Step(torch.device("cpu"), fused)
    x = torch.randn(4, 3, 8, 8)
    weights = [p.detach().clone() for p in step.params]

    norm, skipped = step(x, inf_grad=True)
    assert bool(skipped) and not torch.isfinite(norm)
    assert all(torch.equal(p, w) for p, w in zip(step.params, weights, strict=True))
    assert step.scale.value().item() == INIT_SCALE / 2

    norm, skipped = step(x)
    assert not bool(skipped)
    # The norm is the unscaled gradient's: a scaled one would be ~32768 times larger than fp32's.
    fp32_model = _model("cpu")
    fp32_model(x).square().mean().backward()
    fp32_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in fp32_model.parameters()]))
    assert norm.item() == pytest.approx(fp32_norm.item(), rel=0.05)
    assert not all(torch.equal(p, w) for p, w in zip(step.params, weights, strict=True))
    assert step.scale.value().item() == INIT_SCALE / 2  # grows only after growth_interval applied steps


def test_a_step_the_guard_skips_with_a_finite_gradient_backs_the_scale_off_too():
    # One decision: a forced skip (e.g. another rank's non-finite loss) is a skip for the scaler as well.
    step = Fp16Step(torch.device("cpu"), fused=None)
    _, skipped = step(torch.randn(4, 3, 8, 8), force=True)
    assert bool(skipped) and step.scale.value().item() == INIT_SCALE / 2


def test_the_loss_scale_round_trips_through_its_state_dict():
    step = Fp16Step(torch.device("cpu"), fused=None)
    step(torch.randn(4, 3, 8, 8), inf_grad=True)
    restored = LossScale(torch.device("cpu"), enabled=True)
    restored.load_state_dict(step.scale.state_dict())
    assert restored.scaler.get_scale() == INIT_SCALE / 2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_the_fp16_step_and_its_scale_update_never_make_the_host_wait(device):
    device = torch.device(device)
    step = Fp16Step(device, fused=True)
    x = torch.randn(4, 3, 8, 8, device=device)
    step(x)  # the scale and the optimizer state are created, as in the trainer's unchecked first steps
    with no_host_sync(device):
        _, clean = step(x)
        _, bad = step(x, inf_grad=True)
    assert not bool(clean) and bool(bad)
    assert step.scale.value().item() == INIT_SCALE / 2



def _pending(step: int, *, overflow: bool) -> PendingStep:
    consensus = torch.zeros(ConsensusPayload.SIZE)
    return PendingStep(step, torch.tensor(float("inf")), torch.tensor(True), consensus, torch.tensor(True),
                       keys=[f"img{step}"], images=8, overflow=torch.tensor(overflow))


@pytest.mark.parametrize("overflow", [True, False], ids=["overflow", "non-finite"])
def test_overflow_skips_neither_quarantine_nor_roll_back_and_other_non_finite_steps_do(overflow):
    cfg = GuardConfig(max_consecutive_skips=3, quarantine_after=1)
    monitor = GuardMonitor(cfg, rank=0, world_size=1)
    verdict = monitor.inspect([_pending(step, overflow=overflow) for step in (1, 2, 3)])
    skips = [e for e in verdict.events if e["event"] == "skip"]
    assert [e["step"] for e in skips] == [1, 2, 3] and monitor.skipped_steps == 3
    assert all(e.get("overflow", False) == overflow for e in skips)
    if overflow:
        assert verdict.rollback_reason is None and not verdict.new_quarantine
    else:
        assert verdict.rollback_reason == "3 consecutive non-finite steps" and verdict.new_quarantine


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.device_count() < 2,
                    reason="with CUDA, two ranks need two GPUs")
def test_under_fp16_a_nan_gradient_on_one_rank_makes_both_skip_and_back_the_scale_off_alike(train_config, tmp_path):
    # Two real ranks (torchrun, gloo): rank 1's local gradient gets a NaN at step 3, before DDP's all-reduce. The first
    # steps overflow at GradScaler's initial scale too (YOLOv5's loss sums over the batch): the scale settling.
    config = train_config(train={"precision": "fp16", "max_steps": 5}, faults={"nan_grad_at": [[1, 3]]})
    check(run_train(config))
    run_dir = tmp_path / "run"
    records = read_jsonl(run_dir / "metrics.jsonl")
    skips = {r["step"]: r for r in records if r.get("event") == "skip"}
    assert 3 in skips and skips[3]["bad_ranks"] == [1]
    # Overflow skips (the NaN one too: a finite loss, a non-finite gradient) neither quarantine nor roll back.
    assert all(s.get("overflow") for s in skips.values())
    assert not [r for r in records if r.get("event") in ("rollback", "quarantine")]
    losses = {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
    assert all((losses[step] is None) == (step in skips) for step in losses)
    assert all(math.isfinite(loss) for loss in losses.values() if loss is not None) and len(skips) < 5

    digests = final_digests(run_dir)
    assert digests[0]["model"] == digests[1]["model"] and digests[0]["optimizer"] == digests[1]["optimizer"]
    # Backed off once per skip, on both ranks, by the same verdict (no growth: growth_interval is 2000 steps).
    assert digests[0]["loss_scale"] == digests[1]["loss_scale"] == INIT_SCALE / 2 ** len(skips)
    [checkpoint] = sorted((run_dir / "checkpoints").glob("step-*"))
    counters = json.loads((checkpoint / "trainer.json").read_text())["counters"]
    assert counters["loss_scale"]["scale"] == INIT_SCALE / 2 ** len(skips)  # saved with the counters for a resume
