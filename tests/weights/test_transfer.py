"""Transfer by layer: every tensor whose layer, name and shape match is loaded, the report names exactly the layers
that stayed fresh and why; train.freeze keeps the first N (or the listed) layers at their starting weights."""

import pytest
import torch
from safetensors.torch import load_file

from tests.engine.conftest import check, run_train
from tests.weights.conftest import V5_FULL, V5_STRIPPED, V5_YAML, yolotr_s_like
from yolotr.checkpoint.pretrained import build_model
from yolotr.checkpoint.weights_file import read_weights_file
from yolotr.model.transfer import freeze_layers, transfer_state
from yolotr.model.yolo import DetectionModel


def test_yolov5_weights_into_a_yolotr_s_like_model_leave_exactly_the_transformer_and_the_new_head_fresh():
    source = read_weights_file(V5_FULL)
    model = DetectionModel(yolotr_s_like(), nc=4)
    report = transfer_state(model, source.ema_state, source_yaml=source.model_yaml, source=V5_FULL.name)

    assert [(f.index, f.module, f.reason) for f in report.fresh_layers] == [(8, "C3TR", "was C3"),
                                                                             (24, "Detect", "nc 80→4")]
    layer8 = report.fresh_layers[0]
    assert 0 < layer8.fresh < layer8.tensors  # C3TR's three 1x1 convs are C3's and loaded; only its Transformer is new
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("detect.")}
    loaded = [k for k, v in state.items() if k in source.ema_state and v.shape == source.ema_state[k].shape]
    assert report.loaded == len(loaded) and report.total == len(state)
    assert all(torch.equal(state[k], source.ema_state[k]) for k in loaded)
    assert report.summary().startswith(f"loaded {report.loaded}/{report.total} tensors from {V5_FULL.name}; "
                                       "fresh: model.8 (C3TR, was C3), model.24 (Detect, nc 80→4)")


def test_the_same_architecture_and_classes_load_every_tensor_and_predict_like_the_source():
    model, report = build_model(str(V5_STRIPPED), nc=80, verbose=False)
    assert report.loaded == report.total and not report.fresh_layers and report.unused == 0
    reference = DetectionModel(read_weights_file(V5_STRIPPED).model_yaml, nc=80)
    reference.load_state_dict(read_weights_file(V5_STRIPPED).model_state)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x)[0], reference.eval()(x)[0])


def test_anchors_are_taken_from_the_checkpoint_only_when_its_strides_are_the_models():
    source = read_weights_file(V5_FULL)
    model = DetectionModel(source.model_yaml, nc=80)
    with torch.no_grad():
        model.detect.anchors.mul_(1.5)  # as if the yaml had other anchors
    transfer_state(model, source.ema_state, source_yaml=source.model_yaml, source_strides=[8.0, 16.0, 32.0])
    assert torch.equal(model.detect.anchors, source.ema_state["model.24.anchors"])
    model.detect.anchors.mul_(1.5)
    report = transfer_state(model, source.ema_state, source_yaml=source.model_yaml, source_strides=[4.0, 8.0, 16.0])
    assert not torch.equal(model.detect.anchors, source.ema_state["model.24.anchors"])
    assert [(f.index, f.reason) for f in report.fresh_layers] == [(24, "other strides")]


def test_freeze_takes_the_first_n_layers_or_a_list_as_yolov5s_freeze():
    model = DetectionModel(str(V5_YAML), nc=4)
    assert freeze_layers(model, 3) == [0, 1, 2]
    frozen = {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"0", "1", "2"}
    model = DetectionModel(str(V5_YAML), nc=4)
    assert freeze_layers(model, [24, 0]) == [0, 24]
    assert {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad} == {"0", "24"}
    with pytest.raises(ValueError, match="train.freeze: layers \\[25\\] do not exist"):
        freeze_layers(model, [25])


def test_training_from_yolov5_weights_with_frozen_layers_keeps_those_layers_and_trains_the_rest(
        train_config, tmp_path):
    config = train_config(model=str(V5_YAML), train={"weights": str(V5_STRIPPED), "freeze": 10, "max_steps": 4,
                                                     "optimizer": "adamw", "lr0": 0.01}, debug={"rank_digests": False})
    result = run_train(config, nproc=1, launcher="single")
    check(result)
    assert "[yolotr] weights: loaded 343/349 tensors" in result.stderr  # all but the new head
    assert "model.24 (Detect, nc 80→4)" in result.stderr  # the tiny synthetic set has 4 classes
    source = read_weights_file(V5_STRIPPED).model_state
    trained = {k.removeprefix("model."): v for k, v in load_file(tmp_path / "run/weights/last.safetensors").items()
               if k.startswith("model.") and not k.startswith("model.detect.")}
    for key, value in trained.items():
        layer = int(key.split(".")[1])
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")) or layer == 24:
            continue  # BatchNorm statistics follow the data in frozen layers too (as in YOLOv5); the head is new
        assert torch.equal(value, source[key]) == (layer < 10), key
