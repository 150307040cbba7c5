"""`yolotr model info` and model_summary: parameters, GFLOPs (attention included) and the layer table."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from yolotr.cli import main
from yolotr.model.info import count_flops, model_summary
from yolotr.model.transformer import C3TR
from yolotr.model.yolo import DetectionModel

MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"


def test_summary_of_yolov5n_matches_yolov5s_reported_numbers():
    summary = model_summary(DetectionModel(MODEL_CONFIGS / "yolov5n.yaml"), imgsz=640)

    assert summary["params"] == 1_872_157
    assert abs(summary["gflops"] - 4.5) < 0.05  # YOLOv5's README: 4.5 GFLOPs at 640
    assert summary["num_layers"] == len(summary["layers"]) == 25
    assert summary["layers"][0] == {
        "i": 0,
        "from": -1,
        "n": 1,
        "params": 1_760,
        "module": "yolotr.model.common.Conv",
        "args": [3, 16, 6, 2, 2],
    }
    assert summary["layers"][4]["n"] == 2  # 6 repeats x depth_multiple 0.33


def test_flops_count_two_per_multiply_accumulate_including_attention():
    channels, height, width = 16, 4, 6
    block = C3TR(channels, channels, 1, mlp_ratio=4.0)
    hidden, tokens = channels // 2, height * width

    flops = count_flops(block, (height, width), in_channels=channels)

    convs = tokens * (2 * channels * hidden + 2 * hidden * channels)  # cv1, cv2, cv3 (1x1)
    projections = 4 * tokens * hidden * hidden  # q, k, v, out
    mlp = 2 * tokens * hidden * 4 * hidden
    attention = 2 * tokens * tokens * hidden  # q·kᵀ and attn·v, summed over heads
    assert flops == 2 * (convs + projections + mlp + attention)


def test_flops_scale_with_the_image_area_and_accept_non_square_sizes():
    model = DetectionModel(MODEL_CONFIGS / "yolov5n.yaml")

    square = model_summary(model, 320)["gflops"]
    wide = model_summary(model, (320, 640))["gflops"]

    assert abs(wide / square - 2) < 1e-6


def test_cli_json_prints_one_object_with_params_and_gflops(capsys):
    code = main(["model", "info", "--cfg", str(MODEL_CONFIGS / "yolotr-n.yaml"), "--imgsz", "320", "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["params"] == sum(p.numel() for p in DetectionModel(MODEL_CONFIGS / "yolotr-n.yaml").parameters())
    assert result["imgsz"] == [320, 320] and result["gflops"] > 0 and result["transformer_params"] > 0


def test_cli_prints_the_layer_table_and_summary_line_with_nc_override(capsys):
    code = main(["model", "info", "--cfg", str(MODEL_CONFIGS / "yolov5s.yaml"), "--nc", "1"])

    out = capsys.readouterr().out
    assert code == 0
    assert "yolotr.model.transformer.C3TR" not in out and "yolotr.model.detect.Detect" in out
    # Detect with nc=1: 3 convs of 3 x 6 outputs on 128/256/512 channels instead of 3 x 85.
    detect_params = 3 * 6 * (128 + 256 + 512) + 3 * 3 * 6
    assert f"{7_235_389 - 229_245 + detect_params:,} parameters" in out
    assert "GFLOPs at 640x640" in out


def test_cli_reports_a_bad_yaml_with_file_and_layer(tmp_path, capsys):
    cfg = yaml.safe_load((MODEL_CONFIGS / "yolov5n.yaml").read_text())
    cfg["head"][0][2] = "Conv3"
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))

    code = main(["model", "info", "--cfg", str(path)])

    assert code == 2
    assert f"{path}: layer 10: unknown module 'Conv3'" in capsys.readouterr().err


def test_cli_refuses_an_image_size_off_the_stride(capsys):
    code = main(["model", "info", "--cfg", str(MODEL_CONFIGS / "yolov5n.yaml"), "--imgsz", "300"])

    assert code == 2
    assert "multiples of the model stride 32" in capsys.readouterr().err
