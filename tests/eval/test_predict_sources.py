"""`yolotr predict` on every kind of source (globs, lists, videos, streams, webcams), its per-image outputs (labels,
crops, class filter), and what it does with files and frames it cannot read."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from yolotr.eval.predict import NothingReadableError, PredictSettings, predict
from yolotr.eval.sources import SourceError

REPO = Path(__file__).resolve().parents[2]


def write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / name)
    return folder


def write_video(path: Path, frames: int = 6, size: tuple[int, int] = (80, 48), fps: float = 10.0) -> Path:
    """A few frames made by cv2.VideoWriter: Motion-JPEG in AVI, one JPEG per frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    assert path.stat().st_size > 0
    return path


def video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def settings(**overrides) -> PredictSettings:
    return PredictSettings(**{"imgsz": 64, "conf_thres": 0.2, "max_det": 5, "progress": False, **overrides})


@pytest.fixture
def weights(tiny_weights):
    return tiny_weights[0]


def test_a_video_becomes_an_annotated_video_of_every_vid_stride_th_frame(weights, tmp_path):
    clip = write_video(tmp_path / "clip.avi", frames=6)

    summary = predict(weights, clip, tmp_path / "out", settings(vid_stride=2))

    assert summary.images == 3 and not summary.unreadable
    assert summary.written.videos == [tmp_path / "out" / "clip.mp4"]
    drawn = video_frames(tmp_path / "out" / "clip.mp4")
    assert len(drawn) == 3 and drawn[0].shape == (48, 80, 3)
    names = [image["file_name"] for image in json.loads((tmp_path / "out" / "images.json").read_text())]
    assert names == ["clip_0.jpg", "clip_2.jpg", "clip_4.jpg"]
    assert cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4")).get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)


def test_a_broken_frame_is_counted_and_the_rest_of_the_video_is_predicted(weights, tmp_path):
    clip = write_video(tmp_path / "clip.avi", frames=8)
    data = bytearray(clip.read_bytes())
    jpeg_starts = [i for i in range(len(data) - 1) if data[i : i + 3] == b"\xff\xd8\xff"]
    assert len(jpeg_starts) == 8
    data[jpeg_starts[3] : jpeg_starts[4] - 16] = bytes(jpeg_starts[4] - 16 - jpeg_starts[3])  # frame 3: zeros
    clip.write_bytes(bytes(data))

    summary = predict(weights, clip, tmp_path / "out", settings())

    assert summary.images == 7
    assert summary.unreadable == [f"{clip}: frame 3 does not decode"]
    assert len(video_frames(tmp_path / "out" / "clip.mp4")) == 7


def test_an_unreadable_file_among_images_is_counted_and_the_others_predicted(weights, tmp_path):
    folder = write_images(tmp_path / "imgs", {"a.png": (50, 80), "c.jpg": (40, 40)})
    (folder / "b.jpg").write_text("not an image")

    summary = predict(weights, folder, tmp_path / "out", settings())

    assert summary.images == 2
    assert len(summary.unreadable) == 1 and summary.unreadable[0].startswith(f"{folder / 'b.jpg'}: cannot read the")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.jpg", "images.json", "predictions.json"]


def test_a_glob_and_a_txt_list_are_sources_and_a_listed_missing_file_is_reported(weights, tmp_path):
    folder = write_images(tmp_path / "imgs", {"a.png": (50, 80), "b.png": (64, 48), "c.jpg": (40, 40)})
    clip = write_video(tmp_path / "clip.avi", frames=2)
    (tmp_path / "list.txt").write_text(f"imgs/a.png\n\n{clip}\nimgs/missing.png\n")

    by_glob = predict(weights, str(folder / "*.png"), tmp_path / "glob", settings(save_images=False))
    by_list = predict(weights, tmp_path / "list.txt", tmp_path / "list", settings(save_images=False))

    assert by_glob.images == 2 and not by_glob.unreadable
    assert by_list.images == 1 + 2
    assert len(by_list.unreadable) == 1 and "missing.png" in by_list.unreadable[0]


def test_an_http_stream_is_read_frame_by_frame_into_an_annotated_video(weights, tmp_path):
    write_video(tmp_path / "live.avi", frames=5)
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.avi"
        summary = predict(weights, url, tmp_path / "out", settings(batch_size=4))
    finally:
        server.shutdown()

    assert summary.images == 5 and summary.input_shape[0] == 1  # a live source goes frame by frame
    assert len(video_frames(tmp_path / "out" / "live.mp4")) == 5


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_a_webcam_that_does_not_open_is_a_clear_error_and_writes_nothing(weights, tmp_path):
    with pytest.raises(Exception) as error:
        predict(weights, "9", tmp_path / "out", settings())

    assert type(error.value).__name__ == "VideoOpenError" and "cannot open webcam 9" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_save_txt_rows_are_the_json_boxes_normalised_with_their_confidences(weights, tmp_path):
    folder = write_images(tmp_path / "imgs", {"a.png": (50, 80)})

    predict(weights, folder, tmp_path / "out", settings(save_txt=True, save_images=False))

    (det_json,) = [json.loads((tmp_path / "out" / "predictions.json").read_text())]
    rows = np.loadtxt(tmp_path / "out" / "labels" / "a.txt", ndmin=2)  # (n,6) class cx cy w h conf
    assert len(rows) == len(det_json) > 0
    for row, det in zip(rows, det_json):
        x, y, w, h = det["bbox"]
        expected = [det["category_id"], (x + w / 2) / 80, (y + h / 2) / 50, w / 80, h / 50, det["score"]]
        np.testing.assert_allclose(row, expected, atol=1e-3)


def test_save_crop_cuts_each_box_out_of_the_original_image(weights, tmp_path):
    folder = write_images(tmp_path / "imgs", {"a.png": (50, 80)})

    summary = predict(weights, folder, tmp_path / "out", settings(save_crop=True, save_images=False))

    crops = sorted((tmp_path / "out" / "crops").rglob("*.jpg"))
    detections = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(crops) == summary.written.crops == len(detections) > 0
    widths = sorted(Image.open(crop).size[0] for crop in crops)
    expected = sorted(int(np.ceil(min(d["bbox"][0] + d["bbox"][2], 80))) - int(np.floor(d["bbox"][0]))
                      for d in detections)
    assert widths == expected


def test_the_classes_filter_keeps_only_those_classes(weights, tmp_path):
    folder = write_images(tmp_path / "imgs", {"a.png": (50, 80), "b.png": (64, 48)})

    everything = predict(weights, folder, tmp_path / "all", settings(save_images=False, max_det=50))
    only_two = predict(weights, folder, tmp_path / "two", settings(save_images=False, max_det=50, classes=[2]))

    all_classes = {d["category_id"] for d in json.loads(everything.predictions_json.read_text())}
    kept = {d["category_id"] for d in json.loads(only_two.predictions_json.read_text())}
    assert len(all_classes) > 1 and kept == {2}


def test_predict_reports_milliseconds_per_image_for_each_stage(weights, tmp_path):
    folder = write_images(tmp_path / "imgs", {"a.png": (50, 80), "b.png": (64, 48)})

    summary = predict(weights, folder, tmp_path / "out", settings())

    assert set(summary.speed_ms) == {"pre-process", "inference", "NMS"} and all(v > 0 for v in summary.speed_ms.values())
    assert summary.speed_line().startswith("Speed: ") and "per image at shape (2, 3, 64, 64)" in summary.speed_line()


def test_a_pattern_that_matches_nothing_is_a_source_error(weights, tmp_path):
    with pytest.raises(SourceError, match=r"the pattern matches no image or video"):
        predict(weights, str(tmp_path / "*.png"), tmp_path / "out", settings())


def test_a_text_file_named_jpg_is_one_line_naming_it_exit_1_and_no_output_folder(tiny_weights, tmp_path):
    weights, _ = tiny_weights
    fake = tmp_path / "photo.jpg"
    fake.write_text("hello, I am text")

    result = subprocess.run(
        [sys.executable, "-m", "yolotr", "predict", "--weights", str(weights), "--source", str(fake),
         "--out", str(tmp_path / "out"), "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"yolotr predict: error: --source {fake}: nothing could be read ({fake}: cannot")
    assert not (tmp_path / "out").exists()
    with pytest.raises(NothingReadableError):
        predict(weights, fake, tmp_path / "out", settings())
