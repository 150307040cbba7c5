"""Rollback snapshots: taken into reused host buffers, restorable more than once."""

import copy

import torch
from torch import nn

from yolotr.checkpoint.host_stage import HostStager
from yolotr.guard.ema import ModelEMA
from yolotr.guard.snapshot import restore_snapshot, take_snapshot


def _train(model, optimizer, steps: int) -> None:
    for _ in range(steps):
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()


def test_a_snapshot_restores_the_same_state_twice_although_training_continued_in_between():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ema = ModelEMA(model)
    _train(model, optimizer, 2)
    snap = take_snapshot(2, 2, model, optimizer, ema, HostStager())
    expected_model = copy.deepcopy(model.state_dict())
    expected_optimizer = copy.deepcopy(optimizer.state_dict())

    for _ in range(2):  # roll back, train on (which must not touch the snapshot), roll back again
        _train(model, optimizer, 3)
        restore_snapshot(snap, model, optimizer, ema)
        for key, value in model.state_dict().items():
            assert torch.equal(value, expected_model[key]), key
        for pid, state in optimizer.state_dict()["state"].items():
            assert torch.equal(state["momentum_buffer"], expected_optimizer["state"][pid]["momentum_buffer"]), pid


def test_the_stager_reuses_its_host_buffers_and_copies_the_values():
    stager = HostStager()
    source = {"w": torch.arange(4.0), "nested": [torch.ones(2), 3], "name": "x"}
    first, _ = stager.stage(source)
    source["w"].add_(10)
    assert torch.equal(first["w"], torch.arange(4.0))  # a copy, not a view of the live tensor
    second, plain = stager.stage(source)
    assert second["w"].data_ptr() == first["w"].data_ptr()  # the same host buffer, refilled
    assert torch.equal(second["w"], torch.arange(4.0) + 10) and second["nested"][1] == 3 and second["name"] == "x"
    assert plain == [3, "x"]  # the values that are not tensors, in leaf order
