"""What a checkpoint's state looks like: the optimizer keyed by parameter name, as DCP lays it out."""

import torch
from torch.distributed.checkpoint.state_dict import get_state_dict

from yolotr.checkpoint.checkpointer import OptimizerStateByName
from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.model.yolo import DetectionModel


def test_the_cached_optimizer_state_by_name_equals_dcps_get_state_dict():
    torch.manual_seed(0)
    model = DetectionModel("configs/models/yolotr-n.yaml", nc=3)
    optimizer = build_optimizer(build_param_groups(model, 5e-4, 0.2), "adamw", 0.01, 0.9)
    model(torch.rand(2, 3, 64, 64))[0].sum().backward()
    optimizer.step()

    ours = OptimizerStateByName(model, optimizer)(optimizer)
    _, dcp = get_state_dict(model, optimizer)

    assert ours["param_groups"] == dcp["param_groups"]
    assert ours["state"].keys() == dcp["state"].keys() and len(ours["state"]) > 100
    for name, state in dcp["state"].items():
        assert ours["state"][name].keys() == state.keys(), name
        for key, value in state.items():
            assert torch.equal(ours["state"][name][key], value), (name, key)
