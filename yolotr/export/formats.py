"""The export formats beside ONNX, and a runtime for each format, so that every file is run and checked.

    torchscript  torch.jit.trace of the decoded model (no NMS: the graph stays free of yolotr's custom op)
    openvino     converted from the checked ONNX file by OpenVINO (the optional `yolotr[openvino]` extra)
    engine       a TensorRT engine built from the checked ONNX file (needs a CUDA GPU and the tensorrt wheel)

A `Runtime` takes images (B,3,H,W) fp32 in [0,1] on the CPU and returns the graph's outputs as numpy arrays, in the
order the graph declares them; `sync` waits for the device, so that a latency measured around it is the real one.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolotr.errors import UsageError
from yolotr.export.onnx_export import DecodedOutput


class MissingRuntimeError(UsageError):
    """A format whose package (or device) is not here: the message says what to install."""


@dataclass
class Runtime:
    name: str
    run: Callable[[torch.Tensor], list[np.ndarray]]
    sync: Callable[[], None] = field(default=lambda: None)


# ---------------------------------------------------------------------------------------------------- ONNX
def onnx_runtime(path: Path, device: torch.device, threads: int) -> Runtime:
    """onnxruntime on the CUDA provider for a CUDA device when this onnxruntime has it (onnxruntime-gpu), else on the
    CPU; the runtime's name says which, and so does the table."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    providers: list = ["CPUExecutionProvider"]
    on_gpu = device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if on_gpu:
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    input_type = np.float16 if "float16" in session.get_inputs()[0].type else np.float32

    def run(images: torch.Tensor) -> list[np.ndarray]:
        return session.run(None, {"images": images.numpy().astype(input_type)})

    return Runtime("onnxruntime (CUDA)" if on_gpu else "onnxruntime", run)


# ---------------------------------------------------------------------------------------------------- TorchScript
def export_torchscript(model: nn.Module, out: Path, imgsz: int, *, batch: int, half: bool,
                       device: torch.device) -> Path:
    """Trace the decoded model on `device` (fp16 with `half`: a GPU target) and save it."""
    if half and device.type != "cuda":
        raise UsageError("--half TorchScript is for GPUs (CPU kernels in fp16 are slow): add --device cuda")
    network = copy.deepcopy(model).to(device)
    network = (network.half() if half else network.float()).eval()
    example = torch.rand(batch, 3, imgsz, imgsz, device=device, dtype=torch.float16 if half else torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated upstream but still what many C++ deployments load; and the tracer's warnings are
        # about the input checks (stride multiples), which are constants for a traced shape anyway.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(DecodedOutput(network).eval(), example, strict=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(out))
    return out


def torchscript_runtime(path: Path, device: torch.device, half: bool) -> Runtime:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location=device).eval()
    dtype = torch.float16 if half else torch.float32

    def run(images: torch.Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return [module(images.to(device, dtype)).float().cpu().numpy()]

    return Runtime(f"TorchScript ({device.type})", run, sync=device_sync(device))


# ---------------------------------------------------------------------------------------------------- OpenVINO
def export_openvino(onnx_path: Path, out_dir: Path, *, half: bool) -> Path:
    """`out_dir/<stem>.xml` (+ .bin), OpenVINO's IR, converted from the fp32 ONNX file; weights in fp16 with `half`."""
    ov = _import("openvino", "OpenVINO", "pip install 'yolotr[openvino]' (or pip install openvino)")
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{onnx_path.stem}.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=half)
    return xml


def openvino_runtime(xml: Path, threads: int) -> Runtime:
    """OpenVINO on the CPU, in fp32 (by default it may pick bf16 or fp16 on CPUs that have them)."""
    ov = _import("openvino", "OpenVINO", "pip install 'yolotr[openvino]' (or pip install openvino)")
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                         "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()

    def run(images: torch.Tensor) -> list[np.ndarray]:
        results = request.infer({0: images.numpy()})
        return [np.asarray(results[output]) for output in compiled.outputs]

    return Runtime("OpenVINO (CPU, f32)", run)


# ---------------------------------------------------------------------------------------------------- TensorRT
def export_tensorrt(onnx_path: Path, out: Path, *, half: bool, batch: int, dynamic: bool, imgsz: int,
                    device: torch.device, workspace_gib: float = 4.0) -> Path:
    """Build a TensorRT engine from the fp32 ONNX file (fp16 kernels allowed with `half`). A dynamic ONNX gets one
    optimisation profile: batch 1..max(batch, 8) at imgsz, the best kernels for `batch`."""
    trt = _tensorrt(device)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UsageError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if half:
        config.set_flag(trt.BuilderFlag.FP16)
    if dynamic:
        profile = builder.create_optimization_profile()
        shape = (3, imgsz, imgsz)
        profile.set_shape("images", (1, *shape), (batch, *shape), (max(batch, 8), *shape))
        config.add_optimization_profile(profile)
    with torch.cuda.device(device):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UsageError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(serialized))
    return out


def tensorrt_runtime(path: Path, device: torch.device) -> Runtime:
    """The engine on `device`, its inputs and outputs in torch CUDA tensors."""
    trt = _tensorrt(device)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    input_dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype("images")))).dtype

    def run(images: torch.Tensor) -> list[np.ndarray]:
        x = images.to(device, input_dtype).contiguous()
        context.set_input_shape("images", tuple(x.shape))
        context.set_tensor_address("images", x.data_ptr())
        results = []
        for name in outputs:
            dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
            tensor = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=device)
            context.set_tensor_address(name, tensor.data_ptr())
            results.append(tensor)
        stream = torch.cuda.current_stream(device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{path}: TensorRT execution failed")
        stream.synchronize()
        return [r.float().cpu().numpy() if r.is_floating_point() else r.cpu().numpy() for r in results]

    return Runtime("TensorRT", run, sync=device_sync(device))


# ---------------------------------------------------------------------------------------------------- helpers
def _tensorrt(device: torch.device):
    if device.type != "cuda" or not torch.cuda.is_available():
        raise MissingRuntimeError("a TensorRT engine is built for and on a CUDA GPU: add --device cuda")
    return _import("tensorrt", "TensorRT", "pip install tensorrt (the wheel matching your CUDA)")


def _import(module: str, what: str, how: str):
    try:
        return __import__(module)
    except ImportError:
        raise MissingRuntimeError(f"{what} is not installed here: {how}") from None


def device_sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def path_size_mb(path: Path) -> float:
    """A file's size, or the sum over a folder (OpenVINO's .xml + .bin), in MB."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return os.path.getsize(path) / 1e6
