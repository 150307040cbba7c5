"""`debug.cuda_sync_check`: between inspection steps, a training step must never make the host wait for the GPU.

On CUDA this is torch's own check, `torch.cuda.set_sync_debug_mode("error")`. Without a GPU (CI, laptops) the same
question is put to `HostSyncDetector`, a dispatch mode that raises on every op that synchronises when it runs on CUDA:
  * reading a value back: `.item()`, `bool(t)`, `float(t)`, `torch.equal`;
  * ops whose output size depends on the data, which the host must read back: nonzero, boolean-mask indexing,
    masked_select, unique, repeat_interleave without an output size;
  * a tensor made from Python data: `torch.tensor([...])`, and also a Python number assigned by indexing
    (`t[i] = 2.0`, `t[idx] = 1.0`), which torch wraps in a host tensor and copies to the device (seen to synchronise
    on an H200 with torch 2.11). Kernel arguments are fine: `t.fill_(2.0)`, `t.scatter_(1, idx, 1.0)`, `t * 2.0`.
Ops called from the data pipeline are exempt: it works on host tensors by design, before the batch reaches the device.
torch ships no such mode (its sync debug mode is CUDA-only), hence this one.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_ALWAYS_SYNC = {
    aten._local_scalar_dense,
    aten.is_nonzero,
    aten.equal,
    aten.nonzero,
    aten.masked_select,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
}
_MASK_INDEXING = {aten.index, aten.index_put, aten.index_put_}
_FROM_PYTHON_DATA = {aten.lift_fresh, aten.lift_fresh_copy}
_HOST_SIDE_CODE = ("/yolotr/data/", "/torch/utils/data/")


class HostSyncError(RuntimeError):
    pass


def _would_sync(func, args) -> bool:
    packet = func.overloadpacket
    if packet in _ALWAYS_SYNC:
        return True
    if packet in _MASK_INDEXING:
        return any(t is not None and t.dtype in (torch.bool, torch.uint8) for t in args[1])
    if packet is aten.repeat_interleave:
        return func._overloadname == "Tensor" and len(args) < 2
    return packet in _FROM_PYTHON_DATA


def _called_from_host_side_code() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _HOST_SIDE_CODE):
            return True
        frame = frame.f_back
    return False


class HostSyncDetector(TorchDispatchMode):
    """Raises `HostSyncError` naming the op on the first op that would synchronise on a GPU."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _would_sync(func, args) and not _called_from_host_side_code():
            raise HostSyncError(
                f"{func} would make the host wait for the GPU in a step that must not synchronise "
                "(debug.cuda_sync_check; the traceback shows where)"
            )
        return func(*args, **kwargs)


@contextmanager
def no_host_sync(device: torch.device):
    """Raises on any host synchronisation inside: torch's CUDA check on a GPU, `HostSyncDetector` elsewhere."""
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return
    with HostSyncDetector():
        yield
