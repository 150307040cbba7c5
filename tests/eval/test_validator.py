"""validate(): predictions mapped back to original pixels and scored once per image."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolotr.data.coco_gt import coco_ground_truth
from yolotr.data.spec import load_data_yaml
from yolotr.data.stream import ValStream
from yolotr.eval.validator import validate

IMGSZ = 96  # larger than the 64 px originals, so the letterbox really scales and pads


class GroundTruthOracle(nn.Module):
    """Returns, for each image it has seen in a val batch, that image's letterboxed labels as decoded
    predictions (cx,cy,w,h pixels, objectness 1, one-hot class) - a stand-in for a perfect detector."""

    def __init__(self, batches, nc: int, slots: int = 16) -> None:
        super().__init__()
        self.nc, self.slots = nc, slots
        self.answers: dict[bytes, torch.Tensor] = {}
        for batch in batches:
            for index, image in enumerate(batch.images):
                rows = torch.zeros(slots, 5 + nc)  # empty slots have objectness 0
                mine = batch.targets[batch.targets[:, 0] == index]
                rows[: len(mine), :4] = mine[:, 2:6] * IMGSZ
                rows[: len(mine), 4] = 1.0
                rows[torch.arange(len(mine)), 5 + mine[:, 1].long()] = 1.0
                self.answers[(image.contiguous().float() / 255).numpy().tobytes()] = rows

    def forward(self, x):
        decoded = torch.stack([self.answers[image.contiguous().numpy().tobytes()] for image in x])  # (B,slots,5+nc)
        return decoded, []


def test_a_model_predicting_the_ground_truth_scores_one(synth_data):
    spec = load_data_yaml(synth_data)
    stream = ValStream(spec.val, rank=0, world_size=1, batch_size=4, imgsz=IMGSZ)
    oracle = GroundTruthOracle(list(stream), nc=spec.nc)
    gt = coco_ground_truth(spec.val, list(spec.names))

    result = validate(oracle, stream, gt, list(spec.names), device="cpu")

    assert result.n_images == 9
    assert result.map50 == pytest.approx(1.0)
    assert result.map > 0.99  # letterbox round trip is exact to a fraction of a pixel


def test_validate_restores_training_mode(make_tiny_model, synth_data):
    spec = load_data_yaml(synth_data)
    model = make_tiny_model().train()

    validate(model, ValStream(spec.val, rank=0, world_size=1, batch_size=8, imgsz=64),
             coco_ground_truth(spec.val, list(spec.names)), list(spec.names), device="cpu")

    assert model.training


def test_val_cli_prints_yolov5s_table_with_a_row_per_class(tiny_weights, synth_data, capsys):
    from yolotr.cli import main

    weights, _ = tiny_weights

    assert main(["val", "--weights", str(weights), "--data", str(synth_data), "--device", "cpu"]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]
    assert lines[1].split()[:2] == ["all", "9"]
    assert {line.split()[0] for line in lines[2:]} <= {"circle", "square", "triangle"}


def test_an_image_counted_twice_fails_validation(make_tiny_model, synth_data):
    spec = load_data_yaml(synth_data)
    stream = ValStream(spec.val, rank=0, world_size=1, batch_size=4, imgsz=64)
    twice = list(stream) + list(stream)[:1]  # a broken sharding that hands one batch out again

    with pytest.raises(RuntimeError, match="more than once"):
        validate(make_tiny_model(), twice, coco_ground_truth(spec.val, list(spec.names)), list(spec.names), device="cpu")
