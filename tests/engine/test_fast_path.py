"""The GPU fast path, checked on a CPU: channels-last computes the same loss, fp16 autocast a close one, and a compiled
run trains, saves parameter names without `_orig_mod.` and logs its compile time."""

import pytest
import torch
import yaml
from torch.distributed.checkpoint import FileSystemReader

from tests.engine.conftest import check, read_jsonl, run_train
from yolotr.checkpoint.weights_file import read_weights_file
from yolotr.config.run import TrainConfig
from yolotr.engine.fast_path import FastPath
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
    assert all(r["loss"] is not None for r in records if r["kind"] == "train")

    [checkpoint] = sorted((run_dir / "checkpoints").glob("step-*"))
    saved = FileSystemReader(str(checkpoint / "state")).read_metadata().state_dict_metadata
    assert any(key.startswith("model.") for key in saved)
    assert not [key for key in saved if "_orig_mod" in key]

    weights = read_weights_file(run_dir / "weights" / "last.safetensors")
    assert not [key for key in weights.model_state if "_orig_mod" in key]
    DetectionModel(weights.model_yaml).load_state_dict(weights.model_state, strict=True)  # an eager model
