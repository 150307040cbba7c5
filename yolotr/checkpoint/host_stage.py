"""Copies of the training state in host memory, taken at a step boundary without stalling the GPU for long.

A checkpoint's writer and a rollback snapshot both need the state as it was at one step while training goes on.
`HostStager` copies a nested state (dicts and lists of tensors and plain values) into one flat host buffer per dtype,
allocated on first use and reused by every later copy:
  * pinned when the source is on a GPU, so all device-to-host copies are queued asynchronously and one
    synchronisation ends them (instead of one blocking copy per tensor: ~1,500 for yolotr-n's model, EMA, optimizer);
  * optionally in shared memory, so that a writer process reads the copy without it being sent (writer_process.py);
    shared memory cannot be pinned, so on a GPU the copy lands in pinned buffers and `publish()` moves it over.
torch's DCP has such staging only as private helpers (`_create_cpu_state_dict` / `_copy_state_dict`), hence ours.

A stager's buffers are overwritten by its next `stage()`: the caller makes sure the previous copy is no longer read
(the checkpoint manager waits for the previous save first; a snapshot replaces the previous snapshot).
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """Where one tensor of the state lives in its dtype's flat buffer."""

    dtype: torch.dtype
    offset: int
    shape: tuple[int, ...]

    def view(self, buffers: dict[torch.dtype, torch.Tensor]) -> torch.Tensor:
        return buffers[self.dtype][self.offset : self.offset + math.prod(self.shape)].view(self.shape)


@dataclass
class Layout:
    """The shape of a staged state: its tree, and for each leaf a Slot (tensors) or None (plain values, which are
    carried separately because they change from save to save: learning rates, counters)."""

    spec: TreeSpec
    slots: list[Slot | None]

    def rebuild(self, buffers: dict[torch.dtype, torch.Tensor], plain: list) -> Any:
        return self.unflatten([slot.view(buffers) for slot in self.slots if slot is not None], plain)

    def unflatten(self, tensors: list[torch.Tensor], plain: list) -> Any:
        """The state again, from its tensors and its plain values, each in leaf order."""
        tensor_iter, values = iter(tensors), iter(plain)
        return tree_unflatten([next(tensor_iter) if slot is not None else next(values) for slot in self.slots],
                              self.spec)


class HostStager:
    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.buffers: dict[torch.dtype, torch.Tensor] = {}  # the copy readers see (shared memory when `shared`)
        self.layout: Layout | None = None
        self.generation = 0  # bumped whenever `buffers` are reallocated (a writer process must be sent them again)
        self._views: list[torch.Tensor] = []
        # Shared memory cannot be allocated pinned; a GPU's copies land in pinned buffers first and `publish()`
        # moves them to the shared ones, a host memcpy that the writer thread does off the training loop.
        self._pinned: dict[torch.dtype, torch.Tensor] = {}
        self._pinned_views: list[torch.Tensor] = []
        self._signature: tuple | None = None

    @torch.no_grad()
    def stage(self, state) -> tuple[Any, list]:
        """Copies `state` to host memory. Returns (the copy, with tensors as views of host buffers; the plain values
        in leaf order). `self.layout` describes the copy; with `shared`, call `publish()` before a reader uses
        `buffers`. Per call the Python work is a few list passes: the layout is only rebuilt when the tree changes."""
        leaves, spec = tree_flatten(state)
        is_tensor = [torch.is_tensor(leaf) for leaf in leaves]
        tensors = [leaf for leaf, t in zip(leaves, is_tensor) if t]  # copied under no_grad: no detach() needed
        plain = [leaf for leaf, t in zip(leaves, is_tensor) if not t]
        on_gpu = any(t.is_cuda for t in tensors)
        signature = (is_tensor, [(t.dtype, t.shape) for t in tensors], on_gpu)
        if self.layout is None or signature != self._signature or spec != self.layout.spec:
            self._new_layout(spec, leaves, is_tensor, on_gpu)
            self._signature = signature
        if on_gpu:
            landing = self._pinned_views or self._views
            for dst, src in zip(landing, tensors, strict=True):
                dst.copy_(src, non_blocking=True)
            torch.cuda.current_stream().synchronize()  # one wait for every queued device-to-host copy
            copies = self._pinned_views or self._views
        else:
            if tensors:
                torch._foreach_copy_(self._views, tensors)  # one call for all, not a Python loop
            copies = self._views
        assert self.layout is not None  # made above
        return self.layout.unflatten(copies, plain), plain

    def _new_layout(self, spec: TreeSpec, leaves: list, is_tensor: list[bool], on_gpu: bool) -> None:
        slots: list[Slot | None] = []
        sizes: dict[torch.dtype, int] = {}
        for leaf, tensor in zip(leaves, is_tensor, strict=True):
            if tensor:
                slots.append(Slot(leaf.dtype, sizes.get(leaf.dtype, 0), tuple(leaf.shape)))
                sizes[leaf.dtype] = sizes.get(leaf.dtype, 0) + leaf.numel()
            else:
                slots.append(None)
        self._allocate(sizes, on_gpu)
        self.layout = Layout(spec, slots)
        self._views = [slot.view(self.buffers) for slot in slots if slot is not None]
        self._pinned_views = [slot.view(self._pinned) for slot in slots if slot is not None] if self._pinned else []

    def publish(self) -> None:
        """Moves a GPU's staged copy from the pinned buffers into the shared ones (nothing to do otherwise)."""
        if self._pinned_views:
            torch._foreach_copy_(self._views, self._pinned_views)

    def _allocate(self, sizes: dict[torch.dtype, int], on_gpu: bool) -> None:
        need = sum(n * torch.empty((), dtype=dtype).element_size() for dtype, n in sizes.items())
        if self.shared and not _shared_memory_has_room(need):
            # Touching shared pages beyond the room of /dev/shm (64 MB in a default container) kills the process
            # with SIGBUS: stay in private memory; the writer process is then not used (writer_process.py).
            log.warning(f"/dev/shm has no room for the checkpoint's staged copy ({need >> 20} MiB); writing "
                        "checkpoints from the trainer's own thread (docker run --ipc=host or --shm-size)")
            self.shared = False
        if self.shared:
            try:
                self.buffers = {dtype: self._empty(n, dtype, pin=False, share=True) for dtype, n in sizes.items()}
            except (RuntimeError, OSError) as err:  # no usable /dev/shm (missing, read-only): same fallback
                log.warning(f"cannot use shared memory for the checkpoint's staged copy ({err}); "
                            "writing checkpoints from the trainer's own thread")
                self.shared = False
        if not self.shared:
            self.buffers = {dtype: self._empty(n, dtype, pin=on_gpu, share=False) for dtype, n in sizes.items()}
        self._pinned = (
            {dtype: self._empty(n, dtype, pin=True, share=False) for dtype, n in sizes.items()}
            if on_gpu and self.shared
            else {}
        )
        self.generation += 1

    @staticmethod
    def _empty(numel: int, dtype: torch.dtype, *, pin: bool, share: bool) -> torch.Tensor:
        buf = torch.empty(numel, dtype=dtype, pin_memory=pin)
        return buf.share_memory_() if share else buf


def _shared_memory_has_room(need: int) -> bool:
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:  # no /dev/shm to measure: let torch try
        return True
    return need * 1.1 < free  # room to spare for the DataLoader workers' batches
