"""The Python API: `from yolotr import YOLO` from a preset, yolotr weights or a yolov5 .pt; predict, val, load; the
torch.hub entry points; and an `import yolotr` that stays light."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolotr.api import config_key
from yolotr.eval.results import Results

REPO = Path(__file__).resolve().parents[2]
V5_STRIPPED = REPO / "tests/weights/fixtures/tiny-yolov5s-stripped.pt"


def test_import_yolotr_and_yolotr_help_load_no_torch():
    code = ("import sys, contextlib, io\n"
            "import yolotr\n"
            "assert 'torch' not in sys.modules, 'import yolotr'\n"
            "from yolotr.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "assert 'torch' not in sys.modules, 'yolotr --help'\n"
            "yolotr.YOLO\n"
            "assert 'torch' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("name, key", [("imgsz", "train.imgsz"), ("lr0", "train.lr0"), ("batch", "train.batch_size"),
                                       ("batch_size", "train.batch_size"), ("seed", "run.seed"),
                                       ("workers", "train.num_workers"), ("train.lr0", "train.lr0"),
                                       ("data_cache", "data_cache"), ("max_norm", "guard.max_norm")])
def test_training_keywords_map_to_config_keys(name, key):
    assert config_key(name) == key


def test_an_ambiguous_or_unknown_keyword_is_refused_naming_the_choices():
    with pytest.raises(TypeError, match="'enabled' is ambiguous \\(guard.enabled, wandb.enabled\\)"):
        config_key("enabled")
    with pytest.raises(TypeError, match="unknown training option 'lr'"):
        config_key("lr")


def test_a_yolov5_checkpoint_predicts_boxes_in_the_pixels_of_each_image(tmp_path):
    from PIL import Image

    from yolotr import YOLO

    model = YOLO(V5_STRIPPED)
    Image.new("RGB", (120, 80), (200, 30, 30)).save(tmp_path / "red.png")
    found = model.predict([np.zeros((64, 96, 3), np.uint8), tmp_path / "red.png"], conf=0.0001)
    assert [Path(f.path).name for f in found] == ["image0.jpg", "red.png"]
    for result, (height, width) in zip(found, [(64, 96), (80, 120)]):
        assert isinstance(result, Results) and len(result.boxes) > 0
        xyxy = result.boxes.xyxy
        assert xyxy.shape == (len(result.boxes.conf), 4) and len(result.boxes.cls) == len(result)
        assert (xyxy >= 0).all() and (xyxy[:, [0, 2]] <= width).all()
        assert (xyxy[:, [1, 3]] <= height).all()
    assert model.imgsz == 64 and len(model.names) == 80


def test_a_preset_by_name_with_weights_loaded_by_layer(tmp_path):
    from yolotr import YOLO

    model = YOLO("yolov5s", nc=4)
    assert model.model.nc == 4 and model.source.endswith("yolotr/config/presets/models/yolov5s.yaml")
    report = model.load(V5_STRIPPED)  # tiny weights into the full-size model: only shape-agnostic tensors fit
    assert report.loaded < report.total and report.fresh_layers


def test_val_returns_the_metrics_dict(synth_data):
    from yolotr import YOLO

    metrics = YOLO("yolotr-n", nc=3).val(data=synth_data, imgsz=64)
    assert {"map50", "map", "precision", "recall", "fitness", "n_images"} <= set(metrics)
    assert metrics["n_images"] == 9


def test_torch_hub_loads_the_entry_points_from_the_checkout():
    model = torch.hub.load(str(REPO), "yolotr_n", source="local", nc=3)
    assert type(model).__name__ == "YOLO" and model.model.nc == 3
    with torch.no_grad():
        decoded, _ = model.model(torch.rand(1, 3, 64, 64))
    assert decoded.shape[-1] == 3 + 5
    loaded = torch.hub.load(str(REPO), "yolov5s", source="local", weights=str(V5_STRIPPED))
    assert loaded.model.nc == 80
