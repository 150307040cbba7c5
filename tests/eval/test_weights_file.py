"""The consolidated weights file: safetensors or weights-only .pt, never an arbitrary pickle."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from yolotr.checkpoint.weights_file import load_weights, read_weights_file, save_weights


class NotAWeight:
    """Anything that only a full unpickle could rebuild."""


def save(path, model, ema=None, **overrides):
    arguments = dict(
        model_state=model.state_dict(),
        ema_state=None if ema is None else ema.state_dict(),
        model_yaml=model.yaml,
        names=["circle", "square", "triangle"],
        imgsz=64,
        extra={"step": 12},
    )
    return save_weights(path, **{**arguments, **overrides})


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_loaded_model_holds_the_ema_weights_and_predicts_like_it(tmp_path, suffix, make_tiny_model, tiny_names):
    model, ema = make_tiny_model(seed=0), make_tiny_model(seed=1)
    path = save(tmp_path / f"w{suffix}", model, ema)

    loaded = load_weights(path)

    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)[0], ema(x)[0])
    assert not loaded.model.training
    assert (loaded.names, loaded.imgsz) == (tiny_names, 64)
    assert loaded.meta["weights"] == "ema" and loaded.meta["extra"] == {"step": 12}


def test_prefer_ema_false_loads_the_raw_model_weights(tmp_path, make_tiny_model):
    model, ema = make_tiny_model(seed=0), make_tiny_model(seed=1)
    path = save(tmp_path / "w.safetensors", model, ema)

    loaded = load_weights(path, prefer_ema=False)

    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)[0], model(x)[0])
    assert loaded.meta["weights"] == "model"


def test_safetensors_file_keeps_model_and_ema_tensors_and_the_yaml(tmp_path, make_tiny_model):
    model = make_tiny_model()
    path = save(tmp_path / "w.safetensors", model, model)

    contents = read_weights_file(path)

    assert contents.model_state.keys() == model.state_dict().keys() == contents.ema_state.keys()
    assert contents.model_yaml["backbone"] == model.yaml["backbone"]
    assert contents.version == 1


def test_a_pickle_that_is_not_weights_only_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "yolotr", "tensors": {}, "payload": NotAWeight()}, path)

    with pytest.raises(ValueError, match=r"refused to load: its pickle calls the global '[\w.]*NotAWeight'"):
        load_weights(path)


def test_other_suffixes_and_foreign_files_are_rejected_with_the_file_named(tmp_path, make_tiny_model):
    model = make_tiny_model()
    with pytest.raises(ValueError, match=r"w\.ckpt.*\.safetensors or \.pt"):
        save(tmp_path / "w.ckpt", model)
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match=r"foreign\.safetensors: metadata key 'format' missing"):
        load_weights(foreign)


def test_names_must_match_the_model_classes(tmp_path, make_tiny_model):
    with pytest.raises(ValueError, match="2 class names but model yaml nc=3"):
        save(tmp_path / "w.safetensors", make_tiny_model(), names=["a", "b"])


def test_a_file_is_written_whole_or_not_at_all(tmp_path, make_tiny_model):
    path = save(tmp_path / "w.safetensors", make_tiny_model())

    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"] and path.stat().st_size > 0


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_files_are_readable_by_the_group_as_the_umask_allows(tmp_path, suffix, make_tiny_model):
    model = make_tiny_model()
    previous = os.umask(0o022)
    try:
        path = save(tmp_path / f"w{suffix}", model)
    finally:
        os.umask(previous)

    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # like every other file of a run, not -rw-------
