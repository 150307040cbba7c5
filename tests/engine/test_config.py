"""The config tree: typed, validated before any process starts, errors naming the key path and the file."""

import dataclasses
import subprocess
import sys

import pytest

from yolotr.config import ConfigError, load_config
from yolotr.config.model import TransformerConfig, TransformerOverrides


def _write(tmp_path, text):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


def test_demo_preset_loads_and_overrides_are_parsed_as_yaml(tmp_path):
    cfg = load_config("configs/train/demo.yaml", ["train.batch_size=16", "faults.nan_grad_at=[[1, 3]]"], check_files=False)
    assert cfg.train.batch_size == 16
    assert cfg.faults.nan_grad_at == [[1, 3]]
    assert cfg.model.endswith("yolotr-n.yaml")


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("train:\n  batchsize: 8\n", "train.batchsize", "unknown key"),
        ("train:\n  batch_size: eight\n", "train.batch_size", "expected an integer"),
        ("train:\n  imgsz: 100\n", "train.imgsz", "multiple of 32"),
        ("train:\n  optimizer: adam\n", "train.optimizer", "must be one of"),
        ("guard:\n  max_norm: -1\n", "guard.max_norm", "≥ 0"),
        ("train:\n  prefetch: 0\n", "train.prefetch", "> 0"),
        ("checkpoint:\n  preempt_signals: [SIGNOPE]\n", "checkpoint.preempt_signals[0]", "unknown signal"),
        ("debug:\n  anomaly_hooks: true\n  cuda_sync_check: true\n", "debug.anomaly_hooks", "turn one of them off"),
    ],
)
def test_bad_values_fail_with_the_key_path_and_the_file(tmp_path, text, key, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, check_files=False)
    assert f"'{key}'" in str(err.value) and str(path) in str(err.value) and words in str(err.value)


def test_missing_model_file_is_named(tmp_path):
    path = _write(tmp_path, "model: nowhere/model.yaml\n")
    with pytest.raises(ConfigError, match="'model'.*nowhere/model.yaml"):
        load_config(path)


def test_train_cli_rejects_a_bad_override_before_starting_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "yolotr", "train", "--config", "configs/train/demo.yaml", "train.epochs=-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "'train.epochs'" in result.stderr and "configs/train/demo.yaml" in result.stderr
    assert "process group" not in result.stderr.lower()


def test_a_transformer_section_in_the_training_config_overrides_only_the_keys_it_sets(tmp_path):
    path = _write(tmp_path, "transformer:\n  xavier_init: false\n  qk_norm: true\n")
    assert load_config(path, check_files=False).transformer.as_yaml() == {"xavier_init": False, "qk_norm": True}


@pytest.mark.parametrize(("text", "key"), [
    ("transformer:\n  qk_nrom: true\n", "transformer.qk_nrom"),
    ("transformer:\n  num_heads: two\n", "transformer.num_heads"),
    ("transformer:\n  layer_scale: -1\n", "transformer.layer_scale"),
])
def test_a_bad_transformer_override_is_refused_naming_its_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text), check_files=False)
    assert error.value.key == key


def test_the_transformer_overrides_offer_exactly_the_model_switches():
    assert [f.name for f in dataclasses.fields(TransformerOverrides)] == [
        f.name for f in dataclasses.fields(TransformerConfig)
    ]


def test_the_config_reference_in_docs_is_the_one_generated_from_the_config_classes():
    from yolotr.config.reference import REFERENCE_DOC, table

    assert REFERENCE_DOC.read_text().endswith(table()), (
        "docs/config.md is stale: run python -m yolotr.config.reference --write")
