"""yolov5 .pt files (full and optimizer-stripped) are read without running their pickle code, and give yolov5's
own outputs; a crafted .pt is refused by name before its payload can run."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from tests.weights.conftest import V5_FULL, V5_REFERENCE, V5_STRIPPED
from yolotr.checkpoint.weights_file import load_weights, read_weights_file
from yolotr.checkpoint.yolov5_pickle import UnsafePickleError, read_yolov5_checkpoint

REPO = V5_FULL.parents[3]


@pytest.mark.parametrize("form", ["full", "stripped"])
def test_a_yolov5_checkpoint_in_its_own_architecture_gives_yolov5s_outputs_within_1e_4(form):
    reference = torch.load(V5_REFERENCE, weights_only=True)["tensors"]
    loaded = load_weights(V5_FULL if form == "full" else V5_STRIPPED)
    with torch.no_grad():
        decoded, _ = loaded.model(reference["input"])  # (1, N, 85), fp32
    assert decoded.shape == reference[f"{form}.output"].shape
    assert (decoded - reference[f"{form}.output"]).abs().max() <= 1e-4
    assert torch.equal(loaded.model.detect.anchors, reference[f"{form}.anchors"])  # the checkpoint's anchors
    assert loaded.names[:2] == ["class0", "class1"] and len(loaded.names) == 80 and loaded.imgsz == 64


def test_a_full_checkpoint_holds_model_optimizer_and_ema_and_its_ema_is_what_loads_as_yolov5s_attempt_load_does():
    full, stripped = read_yolov5_checkpoint(V5_FULL), read_yolov5_checkpoint(V5_STRIPPED)
    assert full.ema_state is not None and stripped.ema_state is None
    assert full.meta["epoch"] == 0 and stripped.meta["epoch"] == -1
    # strip_optimizer moved the EMA into 'model': the stripped file's weights are the full file's EMA, in fp16.
    for key, value in full.ema_state.items():
        assert torch.equal(value, stripped.model_state[key]), key
    assert load_weights(V5_FULL).meta["weights"] == "ema"


def _torch_archive_calling(tmp_path, function, argument, wrapped_in_checkpoint: bool):
    class Payload:
        def __reduce__(self):
            return function, (argument,)

    obj = {"model": Payload(), "epoch": 3} if wrapped_in_checkpoint else Payload()
    path = tmp_path / "evil.pt"
    torch.save(obj, path)  # a real torch zip archive, as a published "yolov5s.pt" would be
    return path


# Named as protocol-2 pickles name them (Python 2 spellings: __builtin__, commands).
@pytest.mark.parametrize("function, name", [(os.system, "posix.system"), (eval, "__builtin__.eval"),
                                            (subprocess.call, "commands.call")])
@pytest.mark.parametrize("wrapped", [True, False])
def test_a_crafted_pt_is_refused_naming_the_global_and_its_payload_never_runs(tmp_path, function, name, wrapped):
    marker = tmp_path / "payload-ran"
    argument = {
        "posix.system": f"touch {marker}",
        "__builtin__.eval": f"open({str(marker)!r}, 'w').close()",
        "commands.call": ["touch", str(marker)],
    }[name]
    path = _torch_archive_calling(tmp_path, function, argument, wrapped)
    with pytest.raises(UnsafePickleError, match=f"refused to load: its pickle calls the global '{name}'"):
        read_weights_file(path)
    with pytest.raises(UnsafePickleError):
        load_weights(path)
    assert not marker.exists()
    # The proof that the file is really armed: unrestricted unpickling runs the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_torch_archive_that_is_no_yolov5_checkpoint_is_refused_with_what_it_lacks(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state": torch.nn.Linear(2, 2)}, path)  # pickled module, but no 'model'
    with pytest.raises(ValueError, match="not a yolov5 checkpoint"):
        read_weights_file(path)
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="plain.pt"):
        read_weights_file(tmp_path / "plain.pt")


def test_predict_takes_a_yolov5_pt_as_its_weights(tmp_path):
    from PIL import Image

    Image.new("RGB", (96, 64), (120, 30, 200)).save(tmp_path / "a.jpg")
    result = subprocess.run([sys.executable, "-m", "yolotr", "predict", "--weights", str(V5_STRIPPED), "--source",
                             str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out"), "--conf", "0.0001"],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "predictions.json").is_file()
