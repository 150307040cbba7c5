"""The LR / momentum / accumulation schedule follows YOLOv5's train.py step for step (hyp.scratch-low, linear LR)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from yolotr.engine.optim import Schedule

HYP = dict(lr0=0.01, lrf=0.01, momentum=0.937, warmup_momentum=0.8, warmup_bias_lr=0.1, warmup_epochs=3.0)


def yolov5_steps(batches_per_epoch: int, epochs: int, batch_size: int, nbs: int = 64, cos: bool = False) -> list:
    """What YOLOv5's training loop does, as a specification: per optimizer step (batches it accumulated, weight LR,
    bias LR, momentum) at the batch it steps on. Warm-up max(3 epochs, 100 batches) with the accumulation ramp, then
    LambdaLR stepped once per epoch."""
    nw = max(round(HYP["warmup_epochs"] * batches_per_epoch), 100)
    accumulate = max(round(nbs / batch_size), 1)
    if cos:
        lf = lambda e: ((1 - np.cos(e * np.pi / epochs)) / 2) * (HYP["lrf"] - 1) + 1  # noqa: E731
    else:
        lf = lambda e: (1 - e / epochs) * (1.0 - HYP["lrf"]) + HYP["lrf"]  # noqa: E731
    steps, last = [], -1
    for epoch in range(epochs):
        for i in range(batches_per_epoch):
            ni = i + batches_per_epoch * epoch
            lr_w = lr_b = HYP["lr0"] * lf(epoch)
            momentum = HYP["momentum"]
            if ni <= nw:
                accumulate = max(1, np.interp(ni, [0, nw], [1, nbs / batch_size]).round())
                lr_b = np.interp(ni, [0, nw], [HYP["warmup_bias_lr"], HYP["lr0"] * lf(epoch)])
                lr_w = np.interp(ni, [0, nw], [0.0, HYP["lr0"] * lf(epoch)])
                momentum = np.interp(ni, [0, nw], [HYP["warmup_momentum"], HYP["momentum"]])
            if ni - last >= accumulate:
                steps.append((ni - last, lr_w, lr_b, momentum))
                last = ni
    return steps


def schedule(batches_per_epoch: int, epochs: int, batch_size: int, nbs: int = 64, cos: bool = False) -> Schedule:
    train = SimpleNamespace(**HYP, epochs=epochs, warmup_steps_min=100, cos_lr=cos, lr_step="epoch")
    return Schedule.from_config(train, batches_per_epoch, accumulate=max(round(nbs / batch_size), 1))


def optimizer() -> torch.optim.Optimizer:
    weight, bias = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [weight], "kind": "weight"}, {"params": [bias], "kind": "bias"}], lr=0.0,
                           momentum=0.9, nesterov=True)


@pytest.mark.parametrize(("batches_per_epoch", "epochs", "batch_size", "cos"), [
    (32, 8, 32, False),  # the CPU parity setting: accumulation ramps 1 → 2 over the 100-batch warm-up
    (64, 6, 64, False),  # the GPU parity setting: no accumulation, 192-batch warm-up
    (20, 10, 16, True),  # accumulation ramps 1 → 4; cosine
])
def test_every_step_has_yolov5s_batches_lr_and_momentum(batches_per_epoch, epochs, batch_size, cos):
    expected = yolov5_steps(batches_per_epoch, epochs, batch_size, cos=cos)
    mine = schedule(batches_per_epoch, epochs, batch_size, cos=cos)
    assert mine.total_steps() == len(expected)
    opt = optimizer()
    for step, (batches, lr_w, lr_b, momentum) in enumerate(expected):
        mine.apply(opt, step)
        weight, bias = opt.param_groups
        assert mine.accumulate_at(step) == batches, step
        assert weight["lr"] == pytest.approx(lr_w, abs=1e-12), step
        assert bias["lr"] == pytest.approx(lr_b, abs=1e-12), step
        assert weight["momentum"] == pytest.approx(momentum, abs=1e-12), step


def test_the_last_epoch_trains_at_lf_of_epochs_minus_one_and_lr0_lrf_comes_only_after_it():
    mine = schedule(32, 8, 64)
    opt = optimizer()
    mine.apply(opt, mine.total_steps() - 1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * ((1 - 7 / 8) * 0.99 + 0.01))


def test_per_step_decay_moves_within_an_epoch_and_reaches_lr0_lrf_at_the_end():
    train = SimpleNamespace(**HYP, epochs=4, warmup_steps_min=0, cos_lr=False, lr_step="step")
    train.warmup_epochs = 0.0
    mine = Schedule.from_config(train, 10, accumulate=1)
    opt = optimizer()
    mine.apply(opt, 5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * ((1 - 0.5 / 4) * 0.99 + 0.01))
    mine.apply(opt, 10_000)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.01)


def test_without_the_ramp_every_step_accumulates_the_nominal_batch():
    train = SimpleNamespace(**HYP, epochs=8, warmup_steps_min=100, cos_lr=False, lr_step="epoch")
    mine = Schedule.from_config(train, 32, accumulate=2, ramp_accumulation=False)
    assert {mine.accumulate_at(s) for s in range(mine.total_steps())} == {2}
    assert mine.total_steps() == 8 * 32 // 2
