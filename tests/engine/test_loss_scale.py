"""fp16's loss scale in one process: the guard's verdict is the scaler's found_inf, so a scaler skip and a guard skip
are one decision, the scale backs off on the device, and the step never makes the host wait (the GPU's fused path,
checked on a CPU by the stand-in and on a GPU by torch's sync check)."""

import pytest
import torch
from torch import nn

from yolotr.debug.sync_check import no_host_sync
from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.guard.loss_scale import LossScale
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
