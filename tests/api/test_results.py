"""`YOLO.predict` returns ultralytics-shaped `Results`: boxes in each original image's pixels whatever its size and
aspect, the normalised forms, plots, saved images, json and DataFrames, and a generator for videos and folders."""

import json
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from yolotr.eval.results import Boxes, Results

REPO = Path(__file__).resolve().parents[2]
V5_STRIPPED = REPO / "tests/weights/fixtures/tiny-yolov5s-stripped.pt"
SIZES = [(61, 97), (120, 200), (64, 64)]  # (height, width): narrow, wide, the training size


@pytest.fixture(scope="module")
def model():
    from yolotr import YOLO

    return YOLO(V5_STRIPPED)  # 80 classes, trained at 64 px


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_boxes_map_back_to_the_pixels_of_images_of_every_size_and_aspect(model, tmp_path):
    arrays = [_image(h, w, i) for i, (h, w) in enumerate(SIZES)]
    Image.fromarray(arrays[1]).save(tmp_path / "wide.png")
    results = model.predict([arrays[0], tmp_path / "wide.png", arrays[2]], conf=0.0001, device="cpu")

    assert [r.path for r in results] == ["image0.jpg", str(tmp_path / "wide.png"), "image2.jpg"]
    for result, (height, width), array in zip(results, SIZES, arrays):
        assert isinstance(result, Results) and len(result) > 0
        assert result.orig_shape == (height, width) and result.boxes.orig_shape == (height, width)
        assert np.array_equal(result.orig_img, array[..., ::-1])  # BGR, as ultralytics'
        boxes = result.boxes
        assert isinstance(boxes.xyxy, torch.Tensor) and boxes.xyxy.shape == (len(result), 4)
        assert (boxes.xyxy >= 0).all() and (boxes.xyxy[:, [0, 2]] <= width).all()
        assert (boxes.xyxy[:, [1, 3]] <= height).all()
        assert boxes.xyxyn.min() >= 0 and boxes.xyxyn.max() <= 1
        assert torch.allclose(boxes.xyxyn[:, [0, 2]] * width, boxes.xyxy[:, [0, 2]])
        assert torch.allclose(boxes.xyxyn[:, [1, 3]] * height, boxes.xyxy[:, [1, 3]])
        centre_x = (boxes.xyxy[:, 0] + boxes.xyxy[:, 2]) / 2
        assert torch.allclose(boxes.xywh[:, 0], centre_x)
        assert torch.allclose(boxes.xywh[:, 2], boxes.xyxy[:, 2] - boxes.xyxy[:, 0])
        assert torch.allclose(boxes.xywhn[:, 3] * height, boxes.xywh[:, 3])
        assert ((boxes.conf > 0) & (boxes.conf <= 1)).all()
        assert boxes.cls.dtype.is_floating_point and (boxes.cls == boxes.cls.round()).all()
        assert boxes.data.shape == (len(result), 6)
        assert result.names[0] == model.names[0] and len(result.names) == 80
        assert set(result.speed) == {"preprocess", "inference", "postprocess"}
        assert all(v >= 0 for v in result.speed.values()) and result.speed["inference"] > 0


def test_the_same_image_at_twice_the_size_gives_the_same_normalised_boxes(model):
    # At imgsz 96 both letterbox to the same 96x64 picture (the large one scaled by 1/2, the small one by 1): the
    # letterbox undone, the large image's boxes are the small one's, twice as large.
    small = _image(64, 96, 3)
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    first, second = model.predict([small, large], conf=0.0001, imgsz=96, device="cpu")
    assert len(first) > 0 and len(second) == len(first)
    assert torch.allclose(second.boxes.xyxy, 2 * first.boxes.xyxy, atol=0.5)
    assert torch.allclose(second.boxes.xyxyn, first.boxes.xyxyn, atol=0.005)


def test_results_and_boxes_index_iterate_and_convert(model):
    result = model(_image(61, 97, 0), conf=0.0001, device="cpu")[0]
    n = len(result)
    assert n > 2
    single = result[0]
    assert isinstance(single, Results) and len(single) == 1 and single.boxes.xyxy.shape == (1, 4)
    assert torch.equal(single.boxes.data[0], result.boxes.data[0])
    assert len(result[1:3]) == 2 and len(result.boxes[result.boxes.conf > result.boxes.conf.median()]) < n
    assert [len(r) for r in result] == [1] * n
    assert len(list(result.boxes)) == n
    with pytest.raises(IndexError):
        result[n]
    as_numpy = result.numpy()
    assert isinstance(as_numpy.boxes.xyxy, np.ndarray) and np.allclose(as_numpy.boxes.xyxyn, result.boxes.xyxyn)
    assert isinstance(result.cpu().boxes.data, torch.Tensor) and result.boxes.numpy().xywhn.shape == (n, 4)
    assert "image0.jpg" in repr(result) and result.verbose().count(",") < n


def test_plot_draws_on_a_bgr_copy_of_the_original_and_save_writes_a_readable_image(model, tmp_path):
    height, width = 120, 200
    image = np.full((height, width, 3), 40, np.uint8)
    image[..., 0] = 200  # red in RGB: blue channel first in BGR
    result = model.predict(image, conf=0.0001, max_det=3, device="cpu")[0]
    plotted = result.plot()
    assert plotted.shape == (height, width, 3) and plotted.dtype == np.uint8
    untouched = plotted == result.orig_img
    assert not untouched.all(), "no box was drawn"
    assert (result.orig_img[..., 2] == 200).all() and (result.orig_img[..., 0] == 40).all()  # BGR
    assert (plotted[untouched.all(axis=2)][:, 2] == 200).all()  # the pixels left alone are still BGR red
    bare = result.plot(labels=False)
    assert (bare != result.orig_img).any() and (bare != plotted).any()  # boxes without their text
    assert (result.plot(boxes=False) == result.orig_img).all()

    written = result.save(tmp_path / "out" / "annotated.png")
    read_back = cv2.imread(written)  # BGR, as plot() returns
    assert read_back is not None and np.array_equal(read_back, plotted)
    jpg = cv2.imread(result.save(tmp_path / "annotated.jpg"))
    assert jpg.shape == (height, width, 3)


def test_to_json_and_summary_round_trip_the_boxes(model):
    height, width = 61, 97
    result = model.predict(_image(height, width, 1), conf=0.0001, device="cpu")[0]
    rows = json.loads(result.to_json())
    assert rows == result.summary() and len(rows) == len(result)
    first = rows[0]
    assert set(first) == {"name", "class", "confidence", "box"} and set(first["box"]) == {"x1", "y1", "x2", "y2"}
    assert first["name"] == result.names[first["class"]]
    boxes = torch.tensor([[r["box"][k] for k in ("x1", "y1", "x2", "y2")] for r in rows])
    assert torch.allclose(boxes, result.boxes.xyxy, atol=1e-4)
    assert torch.allclose(torch.tensor([r["confidence"] for r in rows]), result.boxes.conf, atol=1e-5)
    normalised = json.loads(result.to_json(normalize=True))
    assert all(0 <= r["box"][k] <= 1 for r in normalised for k in ("x1", "y1", "x2", "y2"))
    assert normalised[0]["box"]["x2"] == pytest.approx(first["box"]["x2"] / width, abs=1e-4)


def test_to_df_gives_a_dataframe_of_the_summary(model):
    pandas = pytest.importorskip("pandas")
    result = model.predict(_image(61, 97, 2), conf=0.0001, device="cpu")[0]
    frame = result.to_df()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == len(result)
    assert list(frame.columns) == ["name", "class", "confidence", "box"]
    assert frame["confidence"].tolist() == [r["confidence"] for r in result.summary()]


def test_to_df_without_pandas_names_the_extra():
    code = ("import sys; sys.modules['pandas'] = None\n"
            "import numpy as np, torch\n"
            "from yolotr.eval.results import Results\n"
            "r = Results(np.zeros((4, 4, 3), np.uint8), 'a.jpg', {0: 'a'}, torch.zeros(0, 6))\n"
            "try:\n    r.to_df()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.stdout.strip() == "Results.to_df() needs pandas, an optional extra: pip install 'yolotr[pandas]'"


def test_stream_is_a_generator_that_reads_a_video_frame_by_frame(model, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (200, 120))
    for i in range(5):
        writer.write(_image(120, 200, i)[..., ::-1].copy())
    writer.release()

    found = model.predict(video, stream=True, conf=0.0001, batch_size=2, device="cpu")
    assert isinstance(found, types.GeneratorType)
    first = next(found)
    rest = list(found)
    assert len(rest) == 4 and all(r.path == str(video) for r in [first, *rest])
    assert all(r.orig_shape == (120, 200) and (r.boxes.xyxy[:, 2] <= 200).all() for r in [first, *rest])


def test_a_folder_and_a_glob_stream_lazily(model, tmp_path):
    for i, (height, width) in enumerate(SIZES):
        Image.fromarray(_image(height, width, i)).save(tmp_path / f"{i}.png")
    listed = model.predict(tmp_path, conf=0.0001, device="cpu")
    assert [r.orig_shape for r in listed] == SIZES
    globbed = model.predict(str(tmp_path / "*.png"), stream=True, conf=0.0001, batch_size=1, device="cpu")
    assert next(globbed).path == str(tmp_path / "0.png")
    assert [Path(r.path).name for r in globbed] == ["1.png", "2.png"]


def test_boxes_refuse_a_table_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"Boxes expects \(n, 6\) x1 y1 x2 y2 conf cls, got shape \(2, 4\)"):
        Boxes(torch.zeros(2, 4), (10, 10))
