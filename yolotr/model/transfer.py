"""Starting a detector from another one's weights, layer by layer, and freezing layers (YOLOv5's --freeze).

Transfer is by name: a tensor `model.<i>.<rest>` is loaded when the source holds the same name (same layer index,
same place inside the layer) with the same shape; everything else keeps its fresh initialisation. So yolov5s weights
go into yolotr-s whole except layer 8's Transformer (a C3 there in yolov5s: its three 1x1 convs still load), and a
head trained for 80 classes stays fresh in a 4-class model. Anchors are loaded like any tensor, and only when the
source's strides are the model's: anchors are stored in grid units of their level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

_ALIAS_PREFIX = "detect."  # DetectionModel registers its head twice (model.<last> and detect): one set of tensors


@dataclass(frozen=True)
class FreshLayer:
    """A layer that kept (some of) its fresh initialisation."""

    index: int
    module: str
    """This model's module at that index (C3TR, Detect, ...)."""
    reason: str
    """"was C3" (another module there), "nc 80→4", "not in the source", "other shapes" or "other strides"."""
    fresh: int
    tensors: int


@dataclass
class TransferReport:
    loaded: int
    total: int
    fresh_layers: list[FreshLayer] = field(default_factory=list)
    unused: int = 0
    """Source tensors that found no place in this model."""
    source: str = ""

    def summary(self) -> str:
        text = f"loaded {self.loaded}/{self.total} tensors" + (f" from {self.source}" if self.source else "")
        if self.fresh_layers:
            text += "; fresh: " + ", ".join(f"model.{f.index} ({f.module}, {f.reason})" for f in self.fresh_layers)
        if self.unused:
            text += f"; {self.unused} source tensors unused"
        return text


def layer_modules(model_yaml: dict) -> list[str]:
    """The module name of every layer of a model yaml, without a namespace (`nn.Upsample` → `Upsample`)."""
    entries = list(model_yaml.get("backbone") or []) + list(model_yaml.get("head") or [])
    return [str(entry[2]).rsplit(".", 1)[-1] for entry in entries]


def _layer_index(key: str) -> int | None:
    parts = key.split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "model" and parts[1].isdigit() else None


@torch.no_grad()
def transfer_state(model: nn.Module, state: dict[str, torch.Tensor], *, source_yaml: dict,
                   source_strides: list[float] | None = None, source: str = "") -> TransferReport:
    """Copies every tensor of `state` whose name and shape match into `model` (a DetectionModel); returns what was
    loaded and which layers stayed fresh, and why."""
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(_ALIAS_PREFIX)}
    strides_match = source_strides is None or [float(s) for s in model.stride.tolist()] == list(source_strides)
    fresh_count: dict[int, int] = {}
    tensor_count: dict[int, int] = {}
    shape_differs: set[int] = set()
    used = set()
    for key, tensor in target.items():
        index = _layer_index(key)
        tensor_count[index] = tensor_count.get(index, 0) + 1
        candidate = state.get(key)
        same_shape = candidate is not None and candidate.shape == tensor.shape
        if same_shape and (strides_match or not key.endswith(".anchors")):
            tensor.copy_(candidate.to(tensor.dtype))
            used.add(key)
            continue
        fresh_count[index] = fresh_count.get(index, 0) + 1
        if candidate is not None and not same_shape:
            shape_differs.add(index)
    ours, theirs = layer_modules(model.yaml), layer_modules(source_yaml)
    fresh = []
    for index in sorted(i for i in fresh_count if i is not None):
        module = ours[index]
        if index >= len(theirs):
            reason = "not in the source"
        elif theirs[index] != module:
            reason = f"was {theirs[index]}"
        elif module == "Detect" and source_yaml.get("nc") != model.yaml.get("nc"):
            reason = f"nc {source_yaml.get('nc')}→{model.yaml.get('nc')}"
        elif index in shape_differs:
            reason = "other shapes"
        elif not strides_match:
            reason = "other strides"
        else:
            reason = "not in the source"
        fresh.append(FreshLayer(index, module, reason, fresh_count[index], tensor_count[index]))
    unused = sum(1 for k in state if not k.startswith(_ALIAS_PREFIX) and k not in used)
    return TransferReport(loaded=len(used), total=len(target), fresh_layers=fresh, unused=unused, source=source)


def with_head_aliases(state: dict[str, torch.Tensor], model_yaml: dict) -> dict[str, torch.Tensor]:
    """`state` with the head's tensors also under `detect.`, the second name DetectionModel gives its head (a
    state dict written by another program, e.g. yolov5, has only `model.<last>.`)."""
    head = f"model.{len(layer_modules(model_yaml)) - 1}."
    return {**state, **{_ALIAS_PREFIX + k.removeprefix(head): v for k, v in state.items() if k.startswith(head)}}


def freeze_layers(model: nn.Module, freeze: int | list[int]) -> list[int]:
    """YOLOv5's --freeze: an int N freezes layers 0..N-1, a list those layers (their parameters get no gradient and
    no optimizer state; BatchNorm statistics still follow the data, as in YOLOv5). Returns the frozen layers."""
    layers = len(model.model)
    chosen = list(range(freeze)) if isinstance(freeze, int) else sorted(set(freeze))
    beyond = [i for i in chosen if not 0 <= i < layers]
    if beyond:
        raise ValueError(f"train.freeze: layers {beyond} do not exist (the model has layers 0..{layers - 1})")
    for name, parameter in model.named_parameters():
        if _layer_index(name) in chosen:
            parameter.requires_grad_(False)
    return chosen
