"""The GPU fast path, checked on a CPU: channels-last computes the same loss, fp16 autocast a close one, a compiled
run trains, saves parameter names without `_orig_mod.` and logs its compile time, and a compiler or a layout that
fails (backends that raise, tests/engine/compile_faults.py) sends every rank back to the eager, contiguous path with one
warning, and the run trains bitwise as an eager one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.distributed.checkpoint import FileSystemReader

from tests.engine.conftest import (BIN, REPO, check, final_digests, free_port, read_jsonl, run_in_own_session,
                                   run_train, write_train_config)
from yolotr.checkpoint.weights_file import read_weights_file
from yolotr.config.run import TrainConfig
from yolotr.engine.fast_path import FastPath, fit_backend, try_fast_path
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel


def _model_and_batch(tiny_model):
    torch.manual_seed(0)
    model = DetectionModel(yaml.safe_load(tiny_model.read_text())).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 96, generator=generator)  # not square: H and W must not be swapped anywhere
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [2, 3, 0.3, 0.6, 0.2, 0.2], [3, 0, 0.7, 0.4, 0.4, 0.5]])
    return model, images, targets


def _loss_and_grads(model, images, targets, dtype=None):
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        preds = model(images)
    loss, _ = ComputeLoss(model, imgsz=96)(preds, targets)
    loss.backward()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_channels_last_gives_the_loss_and_gradient_of_the_contiguous_layout(tiny_model):
    model, images, targets = _model_and_batch(tiny_model)
    loss, grads = _loss_and_grads(model, images, targets)

    fast = FastPath.from_config(TrainConfig(channels_last=True), torch.device("cpu"))
    fast.prepare_model(model)
    assert model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    cl_images = fast.images(images)
    assert cl_images.is_contiguous(memory_format=torch.channels_last)
    cl_loss, cl_grads = _loss_and_grads(model, cl_images, targets)
    torch.testing.assert_close(cl_loss, loss, rtol=1e-5, atol=1e-6)
    # Summed in another order, single elements near zero differ; the gradient as a whole does not.
    assert (cl_grads - grads).norm() <= 1e-4 * grads.norm()


def test_fp16_autocast_gives_a_finite_loss_close_to_fp32_and_bf16(tiny_model):
    model, images, targets = _model_and_batch(tiny_model)
    fp32, _ = _loss_and_grads(model, images, targets)
    bf16, _ = _loss_and_grads(model, images, targets, torch.bfloat16)
    fp16, _ = _loss_and_grads(model, images, targets, torch.float16)
    assert torch.isfinite(fp16)
    assert fp16.item() == pytest.approx(fp32.item(), rel=1e-2)
    assert abs(fp16.item() - fp32.item()) <= abs(bf16.item() - fp32.item()) + 1e-3 * fp32.item()  # fp16 is the finer


def test_auto_keeps_the_cpu_path_eager_and_contiguous_and_turns_both_on_for_a_gpu():
    cpu = FastPath.from_config(TrainConfig(), torch.device("cpu"))
    assert not cpu.compile and not cpu.channels_last
    gpu = FastPath.from_config(TrainConfig(), torch.device("cuda"))
    assert gpu.compile and gpu.channels_last
    images = torch.rand(2, 3, 8, 8)
    assert cpu.images(images) is images


@pytest.mark.slow
def test_a_compiled_channels_last_run_trains_and_saves_names_an_eager_model_loads(train_config, tmp_path):
    # The eager backend: dynamo's graphs around the module compiled in place, without inductor's C++ build or even
    # AOTAutograd's tracing (~30 s for this model on a shared CPU); the GPU check (benchmarks/gpu_check.sh) runs
    # inductor.
    config = train_config(train={"max_steps": 2, "compile": True, "compile_backend": "eager",
                                 "channels_last": True}, debug={"rank_digests": False})
    check(run_train(config, launcher="single"))
    run_dir = tmp_path / "run"
    records = read_jsonl(run_dir / "metrics.jsonl")
    [compiled] = [r for r in records if r.get("event") == "compile"]
    assert compiled["step"] == 1 and compiled["backend"] == "eager" and compiled["first_step_s"] > 0
    assert compiled["compiled"] is True and compiled["channels_last"] is True and compiled["fallbacks"] == []
    assert all(r["loss"] is not None for r in records if r["kind"] == "train")

    [checkpoint] = sorted((run_dir / "checkpoints").glob("step-*"))
    saved = FileSystemReader(str(checkpoint / "state")).read_metadata().state_dict_metadata
    assert any(key.startswith("model.") for key in saved)
    assert not [key for key in saved if "_orig_mod" in key]

    weights = read_weights_file(run_dir / "weights" / "last.safetensors")
    assert not [key for key in weights.model_state if "_orig_mod" in key]
    DetectionModel(weights.model_yaml).load_state_dict(weights.model_state, strict=True)  # an eager model


# ------------------------------------------------------------------ a fast path that fails falls back, never kills

def test_try_fast_path_turns_off_compile_then_channels_last_until_the_attempt_succeeds(caplog):
    model = torch.nn.Conv2d(3, 4, 3)
    model.compile(backend="eager")
    tried = []

    def attempt(fast):
        tried.append((fast.compile, fast.channels_last))
        if fast.channels_last:
            raise RuntimeError("kernel without channels-last support\nsecond line")

    fast = FastPath(compile=True, channels_last=True, compile_backend="eager")
    with caplog.at_level("WARNING", logger="yolotr.engine.fast_path"):
        kept, fallbacks = try_fast_path(fast, model, attempt)
    assert tried == [(True, True), (False, True)]  # the plain path is the first step's own
    assert not kept.compile and not kept.channels_last and model._compiled_call_impl is None
    assert [f.part for f in fallbacks] == ["compile", "channels_last"]
    assert fallbacks[0].cause == "rank 0: RuntimeError: kernel without channels-last support"
    assert len(caplog.records) == 2 and "training eager" in caplog.records[0].getMessage()


def test_try_fast_path_keeps_a_fast_path_that_works_and_leaves_an_eager_failure_to_the_step():
    model = torch.nn.Conv2d(3, 4, 3)
    ok = FastPath(compile=True, channels_last=True, compile_backend="eager")
    assert try_fast_path(ok, model, lambda fast: None) == (ok, [])

    def always_fails(fast):
        raise ValueError("a real bug, not the fast path's")

    kept, fallbacks = try_fast_path(FastPath(compile=False, channels_last=True, compile_backend="eager"), model,
                                    always_fails)
    assert not kept.channels_last and len(fallbacks) == 1  # then the first step raises it as it is


def test_deepspeed_trains_contiguous_since_its_engine_cannot_broadcast_channels_last_weights(caplog):
    fast = FastPath(compile=True, channels_last=True, compile_backend="inductor")
    assert fit_backend(fast, "ddp") == (fast, [])
    with caplog.at_level("WARNING", logger="yolotr.engine.fast_path"):
        kept, [fallback] = fit_backend(fast, "deepspeed")
    assert kept.compile and not kept.channels_last and fallback.part == "channels_last"
    assert "byte views" in caplog.records[0].getMessage()
    # What DeepSpeed's engine does with each parameter at its start, and why it cannot take channels-last weights:
    weight = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last).weight
    with pytest.raises(RuntimeError, match="stride"):
        weight.data.view(torch.uint8)


FAULTS_RUNNER = REPO / "tests/engine/compile_faults.py"


def _run_with_faulty_compiler(config: Path, *args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    if nproc == 1:
        cmd = [sys.executable, str(FAULTS_RUNNER)]
    else:
        cmd = [str(BIN / "torchrun"), f"--nproc-per-node={nproc}", f"--master-port={free_port()}", str(FAULTS_RUNNER)]
    return run_in_own_session([*cmd, *args, "train", "--config", str(config)], env, timeout=420)


def _final_state(run_dir: Path) -> dict:
    [end] = [r for r in read_jsonl(run_dir / "digests.jsonl") if r["tag"] == "end" and r["rank"] == 0]
    return {key: end[key] for key in ("model", "optimizer", "ema")}


FAULT_STEPS = 3


@pytest.fixture(scope="module")
def eager_run(tmp_path_factory, tiny_data, tiny_model):
    """The same short run without a fast path: what every fallback must reproduce bitwise."""
    directory = tmp_path_factory.mktemp("eager")
    config = write_train_config(directory, tiny_data, tiny_model,
                                train={"max_steps": FAULT_STEPS, "compile": False, "channels_last": False})
    check(run_train(config, launcher="single"))
    return _final_state(directory / "run")


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "cause"), [
    ("fails_in_forward", "Failed to find C compiler"),
    ("fails_in_backward", "Failed to find C compiler"),
    ("graph_break_storm", "a graph break storm: 100 graph breaks"),
])
def test_a_failing_compiler_falls_back_to_eager_with_one_warning_and_trains_as_an_eager_run(
        backend, cause, eager_run, tmp_path, tiny_data, tiny_model):
    config = write_train_config(tmp_path, tiny_data, tiny_model, train={
        "max_steps": FAULT_STEPS, "compile": True, "compile_backend": backend, "channels_last": False})
    result = _run_with_faulty_compiler(config)
    check(result)
    warnings = [line for line in result.stderr.splitlines() if "train.compile: torch.compile" in line]
    assert len(warnings) == 1 and cause in warnings[0] and "training eager" in warnings[0]
    [event] = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "compile"]
    assert event["compiled"] is False and event["backend"] == backend
    assert [f["part"] for f in event["fallbacks"]] == ["compile"] and cause in event["fallbacks"][0]["cause"]
    assert _final_state(tmp_path / "run") == eager_run


@pytest.mark.slow
def test_a_failing_channels_last_layout_falls_back_to_contiguous_and_trains_as_an_eager_run(
        eager_run, tmp_path, tiny_data, tiny_model):
    config = write_train_config(tmp_path, tiny_data, tiny_model,
                                train={"max_steps": FAULT_STEPS, "compile": False, "channels_last": True})
    result = _run_with_faulty_compiler(config, "--channels-last-fails")
    check(result)
    warnings = [line for line in result.stderr.splitlines() if "train.channels_last:" in line]
    assert len(warnings) == 1 and "no channels-last kernel" in warnings[0]
    [event] = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "compile"]
    assert event["channels_last"] is False and [f["part"] for f in event["fallbacks"]] == ["channels_last"]
    assert _final_state(tmp_path / "run") == eager_run


@pytest.mark.slow
def test_a_compiler_failing_on_one_rank_sends_every_rank_eager_without_a_hang(tmp_path, tiny_data, tiny_model):
    config = write_train_config(tmp_path, tiny_data, tiny_model, train={
        "max_steps": FAULT_STEPS, "compile": True, "compile_backend": "fails_on_rank_1", "channels_last": False})
    check(_run_with_faulty_compiler(config, nproc=2))
    run_dir = tmp_path / "run"
    [event] = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "compile"]
    assert event["compiled"] is False
    assert event["fallbacks"][0]["cause"].startswith("rank 1: BackendCompilerFailed")  # rank 0's compile worked
    digests = final_digests(run_dir)
    assert sorted(digests) == [0, 1] and digests[0]["model"] == digests[1]["model"]
