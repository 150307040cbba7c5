"""The guarded step, in one process: a skipped step changes nothing, a finite one clips and steps; both ways of
skipping (fused optimizer with found_inf, as on a GPU; plain optimizer not stepped, as on a CPU) are covered."""

import copy

import pytest
import torch
from torch import nn

from yolotr.debug.sync_check import no_host_sync
from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.guard.ema import ModelEMA
from yolotr.guard.step import BufferGuard, guarded_step

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def _state_bytes(optimizer):
    out = {}
    for pid, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[(pid, key)] = value.clone() if torch.is_tensor(value) else value
    return out


def _step(model, optimizer, x, *, poison=False, force=False):
    buffers = BufferGuard(model)
    before = buffers.save()
    out = model(x)
    loss = out.square().mean()
    if poison:
        loss = loss * float("nan")
    loss.backward()
    params = [p for p in model.parameters()]
    norm, skipped = guarded_step(
        params, optimizer, max_norm=1.0, images=1, force_skip=torch.tensor(force), buffers=buffers, buffers_before=before
    )
    optimizer.zero_grad(set_to_none=True)
    return norm, skipped


FUSED = pytest.mark.parametrize("fused", [True, None], ids=["fused-found_inf", "plain-not-stepped"])


@FUSED
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_non_finite_step_leaves_parameters_buffers_and_optimizer_state_bitwise_unchanged(name, fused):
    model = _model()
    optimizer = build_optimizer(build_param_groups(model, 5e-4, 0.2), name, 0.01, 0.9, fused=fused)
    x = torch.randn(4, 3, 8, 8)
    _step(model, optimizer, x)  # one real step so that momentum / Adam moments exist
    params_before = copy.deepcopy(model.state_dict())
    state_before = _state_bytes(optimizer)

    x_bad = x.clone()
    x_bad[0, 0, 0, 0] = float("inf")  # a non-finite *forward*: BatchNorm statistics see it too
    norm, skipped = _step(model, optimizer, x_bad)

    assert bool(skipped) and not torch.isfinite(norm)
    for key, value in model.state_dict().items():
        assert torch.equal(value, params_before[key]), key
    state_after = _state_bytes(optimizer)
    assert state_after.keys() == state_before.keys()
    for key, value in state_before.items():
        assert torch.equal(state_after[key], value) if torch.is_tensor(value) else state_after[key] == value, key


@FUSED
def test_sgd_first_step_skipped_then_next_step_equals_a_clean_first_step(fused):
    clean, poisoned = _model(), _model()
    opt_clean = build_optimizer(build_param_groups(clean, 5e-4, 0.2), "sgd", 0.01, 0.9, fused=fused)
    opt_poisoned = build_optimizer(build_param_groups(poisoned, 5e-4, 0.2), "sgd", 0.01, 0.9, fused=fused)
    x = torch.randn(4, 3, 8, 8)
    _step(poisoned, opt_poisoned, x, poison=True)
    _step(clean, opt_clean, x)
    _step(poisoned, opt_poisoned, x)
    for (k, a), b in zip(clean.state_dict().items(), poisoned.state_dict().values()):
        assert torch.equal(a, b), k


def test_finite_step_is_clipped_to_max_norm_and_reports_the_norm_before_clipping():
    model = _model()
    optimizer = build_optimizer(build_param_groups(model, 0.0, 1.0), "sgd", 0.0, 0.9)
    out = model(torch.randn(4, 3, 8, 8) * 100)
    out.square().mean().backward()
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    params = list(model.parameters())
    norm, skipped = guarded_step(
        params, optimizer, max_norm=1.0, images=1, force_skip=torch.tensor(False), buffers=BufferGuard(nn.Identity()),
        buffers_before=[],
    )
    assert not skipped
    torch.testing.assert_close(norm, expected, rtol=1e-5, atol=0)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    assert expected > 1.0 and clipped == pytest.approx(1.0, rel=1e-4)


def test_ema_update_on_a_skipped_step_keeps_the_ema_bitwise():
    model = _model()
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, skipped=torch.tensor(False))
    snapshot = copy.deepcopy(ema.module.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, skipped=torch.tensor(True))
    for key, value in ema.module.state_dict().items():
        assert torch.equal(value, snapshot[key]), key


def test_param_groups_never_decay_biases_or_norms_and_scale_transformer_lr():
    from yolotr.model.yolo import DetectionModel

    model = DetectionModel("configs/models/yolotr-n.yaml", nc=3)
    groups = build_param_groups(model, 5e-4, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for p in group["params"]:
            name = names[id(p)]
            if name.endswith("bias") or p.ndim < 2:
                assert group["weight_decay"] == 0.0, name
    in_proj_biases = [n for n in names.values() if "bias" in n and ("qkv" in n or "in_proj" in n or ".q." in n)]
    assert in_proj_biases, "the transformer block should have attention projection biases"
    transformer = [g for g in groups if g["name"].startswith("transformer/")]
    assert transformer and all(g["lr_mult"] == 0.2 for g in transformer)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@FUSED
def test_a_step_whose_batchnorm_statistics_overflow_is_skipped_and_the_statistics_restored(fused):
    model = _model()
    optimizer = build_optimizer(build_param_groups(model, 5e-4, 0.2), "sgd", 0.01, 0.9, fused=fused)
    buffers = BufferGuard(model)
    before = buffers.save()
    params_before = copy.deepcopy(model.state_dict())
    model(torch.randn(4, 3, 8, 8)).square().mean().backward()
    model[1].running_var[0] = float("inf")  # finite loss and gradient, overflowed statistics
    norm, skipped = guarded_step(list(model.parameters()), optimizer, max_norm=1.0, images=1,
                                 force_skip=torch.tensor(False), buffers=buffers, buffers_before=before)
    assert bool(skipped) and torch.isfinite(norm)
    for key, value in model.state_dict().items():
        assert torch.equal(value, params_before[key]), key


@pytest.mark.parametrize("skipped", [False, True])
def test_buffer_guard_restores_statistics_and_counters_only_on_a_skipped_step(skipped):
    model = _model()
    buffers = BufferGuard(model)
    before = copy.deepcopy(dict(model.named_buffers()))
    saved = buffers.save()
    model(torch.randn(4, 3, 8, 8))  # a training forward moves the running statistics and the batch counter
    after_forward = copy.deepcopy(dict(model.named_buffers()))
    assert not torch.equal(after_forward["1.running_mean"], before["1.running_mean"])
    buffers.restore(saved, where=torch.tensor(skipped))
    expected = before if skipped else after_forward
    for key, value in model.named_buffers():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_fused_guarded_step_and_ema_never_make_the_host_wait_and_a_skip_changes_nothing(name, device):
    # The GPU's path (fused kernels + found_inf), under torch.cuda.set_sync_debug_mode("error") on a GPU and the
    # stand-in on a CPU: a clean step, then a non-finite one, neither read back until the end.
    device = torch.device(device)
    model = _model().to(device)
    optimizer = build_optimizer(build_param_groups(model, 5e-4, 0.2), name, 0.01, 0.9, fused=True)
    ema = ModelEMA(model)
    params = list(model.parameters())
    buffers = BufferGuard(model)
    no_skip = torch.zeros((), dtype=torch.bool, device=device)
    x = torch.randn(4, 3, 8, 8, device=device)
    x_bad = x.clone()
    x_bad[0, 0, 0, 0] = float("inf")

    def step(inputs):
        before = buffers.save()
        model(inputs).square().mean().backward()
        norm, skipped = guarded_step(params, optimizer, max_norm=1.0, images=1, force_skip=no_skip, buffers=buffers,
                                     buffers_before=before)
        ema.update(model, skipped)
        optimizer.zero_grad(set_to_none=True)
        return skipped

    step(x)  # creates the optimizer state, as the trainer's unchecked first steps do
    with no_host_sync(device):
        clean = step(x)
        state_before = (copy.deepcopy(model.state_dict()), _state_bytes(optimizer), copy.deepcopy(ema.state_dict()))
        bad = step(x_bad)
    assert not bool(clean) and bool(bad)
    model_before, optimizer_before, ema_before = state_before
    assert all(torch.equal(v, model_before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, optimizer_before[k]) if torch.is_tensor(v) else v == optimizer_before[k]
               for k, v in _state_bytes(optimizer).items())
    assert all(torch.equal(v, ema_before["module"][k]) for k, v in ema.state_dict()["module"].items())


@pytest.mark.parametrize("poison, bad", [(None, False), (float("nan"), True), (float("inf"), True),
                                         (float("-inf"), True), ("inf and -inf", True), (3e38, False)])
def test_a_gradient_with_a_nan_or_an_infinity_marks_the_rank_bad_and_the_mark_stays(poison, bad):
    from yolotr.guard.consensus import record_nonfinite

    grad = torch.randn(1000)
    if poison == "inf and -inf":  # they cancel in the sum to NaN, not to a finite value
        grad[3], grad[700] = float("inf"), float("-inf")
    elif poison is not None:
        grad[17] = poison
    local_bad = torch.zeros((), dtype=torch.bool)
    with no_host_sync(grad.device):
        record_nonfinite(local_bad, grad)
    assert bool(local_bad) is bad
    record_nonfinite(local_bad, torch.ones(10))  # a later finite gradient of the step does not clear it
    assert bool(local_bad) is bad
