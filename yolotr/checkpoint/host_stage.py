"""Copies of the training state in host memory, taken at a step boundary without stalling the GPU for long.

A checkpoint's background writer and a rollback snapshot both need the state as it was at one step while training
goes on. `HostStager` copies a nested state (dicts and lists of tensors and plain values) into host buffers that are
allocated on first use and reused by every later copy: pinned when the source is on a GPU, so that all the
device-to-host copies are queued asynchronously and one synchronisation ends them (instead of one blocking copy per
tensor, about 1,500 for yolotr-n's model, EMA and optimizer). torch's DCP has such staging only as private helpers
(`_create_cpu_state_dict` / `_copy_state_dict`), hence this small one.

A stager's buffers are overwritten by its next `stage()`: the caller makes sure the previous copy is no longer read
(the checkpoint manager waits for the previous save first; a snapshot replaces the previous snapshot).
"""

from __future__ import annotations

import copy

import torch


class HostStager:
    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def stage(self, state):
        """Returns a host copy of `state` whose tensors live in this stager's buffers."""
        queued_on_gpu = []
        staged = self._copy(state, (), queued_on_gpu)
        if queued_on_gpu:
            torch.cuda.current_stream().synchronize()  # one wait for every queued device-to-host copy
        return staged

    def _copy(self, obj, key: tuple, queued_on_gpu: list):
        if torch.is_tensor(obj):
            src = obj.detach()
            buf = self._buffers.get(key)
            if buf is None or buf.shape != src.shape or buf.dtype != src.dtype:
                buf = torch.empty(src.shape, dtype=src.dtype, pin_memory=src.is_cuda)
                self._buffers[key] = buf
            buf.copy_(src, non_blocking=src.is_cuda)
            if src.is_cuda:
                queued_on_gpu.append(key)
            return buf
        if isinstance(obj, dict):
            return {k: self._copy(v, (*key, k), queued_on_gpu) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._copy(v, (*key, i), queued_on_gpu) for i, v in enumerate(obj))
        return copy.deepcopy(obj)
