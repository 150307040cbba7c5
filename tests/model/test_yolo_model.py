"""Building a DetectionModel from YOLOv5-format yaml, its outputs, and the errors for bad yamls."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from yolotr.model.detect import Detect
from yolotr.model.transformer import C3TR, C3TRv5
from yolotr.model.yolo import DetectionModel, ModelConfigError

MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "expected"), [("yolov5n", 1_872_157), ("yolov5s", 7_235_389)])
def test_plain_layouts_have_yolov5s_own_parameter_counts(name, expected):
    model = DetectionModel(MODEL_CONFIGS / f"{name}.yaml")

    assert n_params(model) == expected


@pytest.mark.parametrize("name", sorted(path.stem for path in MODEL_CONFIGS.glob("*.yaml")))
def test_every_shipped_config_builds_with_strides_8_16_32(name):
    model = DetectionModel(MODEL_CONFIGS / f"{name}.yaml")

    assert model.nc == 80
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert model.yaml_file == str(MODEL_CONFIGS / f"{name}.yaml")
    assert isinstance(model.detect, Detect) and model.detect is model.model[-1]


def test_transformer_configs_put_the_transformer_block_where_yolov5_does():
    assert isinstance(DetectionModel(MODEL_CONFIGS / "yolotr-s.yaml").model[8], C3TR)
    assert isinstance(DetectionModel(MODEL_CONFIGS / "yolov5s-transformer.yaml").model[8], C3TRv5)


def test_layers_carry_yolov5s_index_from_and_type_tags():
    model = DetectionModel(MODEL_CONFIGS / "yolov5n.yaml")

    assert [layer.i for layer in model.model] == list(range(25))
    assert model.model[12].f == [-1, 6]
    assert model.model[24].f == [17, 20, 23]
    assert model.model[0].type == "yolotr.model.common.Conv"


def test_yolov5_layout_that_says_c3tr_loads_with_yolotrs_block(tmp_path, model_yaml):
    cfg = model_yaml("yolov5s-transformer")
    cfg["backbone"][8][2] = "C3TR"  # YOLOv5's own yolov5s-transformer.yaml spells it this way
    path = tmp_path / "yolov5s-transformer.yaml"
    path.write_text(yaml.safe_dump(cfg))

    model = DetectionModel(path)

    assert isinstance(model.model[8], C3TR)


def test_train_mode_returns_raw_maps_per_level_for_a_non_square_batch(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg(nc=3)).train()

    raw = model(torch.rand(2, 3, 256, 320))

    assert [tuple(level.shape) for level in raw] == [(2, 3, 32, 40, 8), (2, 3, 16, 20, 8), (2, 3, 8, 10, 8)]


def test_eval_mode_returns_decoded_boxes_and_the_raw_maps(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg(nc=3)).eval()

    decoded, raw = model(torch.rand(2, 3, 256, 320))

    assert decoded.shape == (2, 3 * (32 * 40 + 16 * 20 + 8 * 10), 8)
    assert len(raw) == 3
    assert ((decoded[..., 4:] >= 0) & (decoded[..., 4:] <= 1)).all()  # sigmoid scores


def test_decoding_follows_yolov5s_formulas(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg(nc=2)).eval()
    detect = model.detect
    decoded, raw = model(torch.rand(1, 3, 64, 96))
    level, anchor, row, col = 2, 1, 1, 2  # stride 32 level: 2 x 3 cells
    logits = raw[level][0, anchor, row, col]

    # The row of `decoded`: levels are concatenated, each flattened as (anchor, row, col).
    offset = sum(detect.na * r.shape[2] * r.shape[3] for r in raw[:level])
    index = offset + (anchor * raw[level].shape[2] + row) * raw[level].shape[3] + col
    box = decoded[0, index]

    sig = logits.sigmoid()
    expected_xy = (2 * sig[:2] - 0.5 + torch.tensor([col, row])) * 32
    expected_wh = (2 * sig[2:4]) ** 2 * torch.tensor([156.0, 198.0])  # P5 anchor 1 in pixels
    assert torch.allclose(box[:2], expected_xy)
    assert torch.allclose(box[2:4], expected_wh)
    assert torch.allclose(box[4:], sig[4:])


def test_detect_biases_start_at_yolov5s_priors(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg(nc=5))
    detect = model.detect

    for conv, stride in zip(detect.m, (8, 16, 32), strict=True):
        bias = conv.bias.view(detect.na, detect.no)
        weight_bound = 1 / math.sqrt(conv.in_channels)  # PyTorch's default init before the prior is added
        assert (bias[:, 4] - math.log(8 / (640 / stride) ** 2)).abs().max() <= weight_bound
        assert (bias[:, 5:] - math.log(0.6 / (5 - 0.99999))).abs().max() <= weight_bound


def test_anchors_are_stored_in_grid_units_of_their_level(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg())

    assert torch.allclose(model.detect.anchors[0, 0], torch.tensor([10 / 8, 13 / 8]))
    assert torch.allclose(model.detect.anchors[2, 2], torch.tensor([373 / 32, 326 / 32]))


def test_building_leaves_batchnorm_statistics_untouched(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg())

    bn = model.model[0].bn
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert bn.num_batches_tracked.item() == 0
    assert model.training


def test_nc_and_transformer_keywords_override_the_yaml(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg(nc=80), nc=7, transformer={"layer_scale": 0.5})

    assert model.nc == 7 and model.detect.no == 12 and model.yaml["nc"] == 7
    # the yaml's other switches stay (qk_norm: true), the keyword wins for layer_scale
    assert model.yaml["transformer"] == {"qk_norm": True, "layer_scale": 0.5, "xavier_init": True}
    layer = model.model[8].m.layers[0]
    assert torch.allclose(layer.ls1.gamma, torch.full_like(layer.ls1.gamma, 0.5))
    assert not isinstance(layer.attn.q_norm, torch.nn.Identity)


def test_transformer_switches_reach_yolov5s_block_too(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg(block="C3TRv5"), transformer={"layer_scale": 1e-4})

    gammas = [p for name, p in model.model[8].named_parameters() if name.endswith("gamma")]

    assert gammas and all(torch.allclose(g, torch.full_like(g, 1e-4)) for g in gammas)


def test_input_size_that_is_not_a_multiple_of_32_is_refused(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg())

    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 250, 320))


def write_yaml(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("edit", "layer", "problem"),
    [
        (lambda cfg: cfg["backbone"][2].__setitem__(2, "C4"), 2, "unknown module 'C4'"),
        (lambda cfg: cfg["head"][2].__setitem__(0, [-1, 30]), 12, "'from' index 30 does not exist"),
        (lambda cfg: cfg["backbone"][0].__setitem__(0, 0), 0, "'from' index 0 does not exist"),
        (lambda cfg: cfg["backbone"][1].__setitem__(3, [128, 3, 2, None, 5]), 1, "cannot build Conv"),
        (lambda cfg: cfg["head"][2].__setitem__(0, [-1, 2]), 12, "inputs do not fit"),
        (lambda cfg: cfg["head"][-1].__setitem__(0, [17, 20]), 24, "Detect reads 2 levels but 'anchors' has 3"),
        (lambda cfg: cfg["backbone"][3].__setitem__(1, 0), 3, "'number' must be an integer >= 1"),
        (lambda cfg: cfg["head"][-1].__setitem__(3, [20, "anchors"]), 24, "class count 20 differs from nc=80"),
    ],
    ids=[
        "unknown-module",
        "from-ahead",
        "from-at-layer-0",
        "groups-do-not-divide",
        "concat-sizes",
        "detect-levels",
        "zero-repeats",
        "detect-nc",
    ],
)
def test_bad_yaml_fails_at_build_naming_file_layer_and_problem(tmp_path, model_yaml, edit, layer, problem):
    cfg = model_yaml("yolov5n")
    edit(cfg)
    path = write_yaml(tmp_path, cfg)

    with pytest.raises(ModelConfigError) as error:
        DetectionModel(path)

    assert str(path) in str(error.value)
    assert f"layer {layer}:" in str(error.value)
    assert problem in str(error.value)
    assert error.value.layer == layer


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda cfg: cfg.__setitem__("nc", 0), "'nc' must be an integer > 0, got 0"),
        (lambda cfg: cfg.__setitem__("nc", -3), "'nc' must be an integer > 0, got -3"),
        (lambda cfg: cfg.__setitem__("anchors", 3), "autoanchor"),
        (lambda cfg: cfg.pop("width_multiple"), "'width_multiple' must be a number > 0"),
        (lambda cfg: cfg.__setitem__("transformer", {"qk_nrom": True}), "transformer.qk_nrom: unknown key"),
    ],
)
def test_bad_top_level_keys_fail_naming_file_and_key(tmp_path, model_yaml, edit, problem):
    cfg = model_yaml("yolotr-n")
    edit(cfg)
    path = write_yaml(tmp_path, cfg)

    with pytest.raises(ModelConfigError, match=problem) as error:
        DetectionModel(path)

    assert str(error.value).startswith(str(path))


def test_nc_keyword_below_one_is_refused():
    with pytest.raises(ModelConfigError, match="'nc' must be an integer > 0"):
        DetectionModel(MODEL_CONFIGS / "yolov5n.yaml", nc=0)


def test_transformer_width_the_heads_do_not_divide_fails_naming_the_layer(tiny_model_cfg):
    with pytest.raises(ModelConfigError, match=r"<model dict>: layer 8: cannot build C3TR.*num_heads=3"):
        DetectionModel(tiny_model_cfg(), transformer={"num_heads": 3})


def test_a_model_rebuilt_from_its_own_yaml_loads_its_weights(tiny_model_cfg):
    # How checkpoints work: they store model.yaml (with the nc, ch and transformer overrides folded in).
    original = DetectionModel(tiny_model_cfg(), ch=1, nc=4, transformer={"layer_scale": 0.1, "qk_norm": False})

    rebuilt = DetectionModel(original.yaml)
    rebuilt.load_state_dict(original.state_dict(), strict=True)

    assert (rebuilt.nc, rebuilt.in_channels, rebuilt.yaml["ch"]) == (4, 1, 1)
    image = torch.rand(1, 1, 64, 64)
    assert torch.equal(rebuilt.eval()(image)[0], original.eval()(image)[0])


def test_eval_under_bf16_autocast_decodes_boxes_in_fp32(tiny_model_cfg):
    model = DetectionModel(tiny_model_cfg()).eval()
    image = torch.rand(1, 3, 64, 96)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoded, raw = model(image)

    assert raw[0].dtype == torch.bfloat16
    assert decoded.dtype == torch.float32  # bf16 would round x near 640 to steps of 4 pixels
    assert torch.isfinite(decoded).all()
