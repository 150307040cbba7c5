"""Builds a detector from a model yaml in YOLOv5's format.

A YOLOv5 model yaml works unchanged: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` (pixels, one list
per level) and ``backbone`` / ``head`` lists of ``[from, number, module, args]``, parsed with YOLOv5's rules (repeats
scaled by depth_multiple, output channels by width_multiple rounded up to a multiple of 8).

Module names: Conv, Bottleneck, C3, SPPF, SPP, Focus, Concat, nn.Upsample, Detect, and the Transformer blocks
``C3TR`` (yolotr's, stable by construction) and ``C3TRv5`` (YOLOv5's own C3TR). A YOLOv5 yaml that says ``C3TR``
therefore gets yolotr's block; write ``C3TRv5`` for YOLOv5's. One optional extra top-level key, ``transformer:``,
configures every C3TR/C3TRv5 (see `yolotr.config.model.TransformerConfig`).

Anything wrong in the yaml raises `ModelConfigError` at build time, naming the file, the layer and the problem.
"""

from __future__ import annotations


import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from yolotr.config.model import TransformerConfig
from yolotr.errors import UsageError
from yolotr.model.common import C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus
from yolotr.model.detect import Detect
from yolotr.model.transformer import C3TR, TRANSFORMER_C3_TYPES, C3TRv5


class ModelConfigError(UsageError):
    """A model yaml (or dict) that cannot be built; the message names the file, the layer index and the problem."""

    def __init__(self, source: str, problem: str, layer: int | None = None) -> None:
        self.source, self.problem, self.layer = source, problem, layer
        where = f"{source}: layer {layer}" if layer is not None else source
        super().__init__(f"{where}: {problem}")


MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "Bottleneck": Bottleneck,
    "C3": C3,
    "C3TR": C3TR,
    "C3TRv5": C3TRv5,
    "SPPF": SPPF,
    "SPP": SPP,
    "Focus": Focus,
    "Concat": Concat,
    "nn.Upsample": nn.Upsample,
    "Upsample": nn.Upsample,
    "Detect": Detect,
}
# Modules called as Module(c_in, c_out, *args), whose c_out is scaled by width_multiple.
_CHANNEL_MODULES = (Conv, Bottleneck, C3, C3TR, C3TRv5, SPPF, SPP, Focus)
# Modules that take the repeat count as their third argument instead of being stacked n times.
_REPEAT_INSIDE_MODULES = (C3, C3TR, C3TRv5)
# Input stride used to measure the level strides with a dry run, as YOLOv5 does.
_DRY_RUN_SIZE = 256


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds up to a multiple of `divisor` (YOLOv5's channel rounding)."""
    return math.ceil(value / divisor) * divisor


def _module_path(module_type: type) -> str:
    return f"{module_type.__module__}.{module_type.__qualname__}"


def _positive_number(cfg: dict, key: str, source: str) -> float:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ModelConfigError(source, f"'{key}' must be a number > 0, got {value!r}")
    return float(value)


def _check_anchors(anchors: Any, source: str) -> list[list[float]]:
    if isinstance(anchors, int):
        raise ModelConfigError(source, "'anchors' given as a count (YOLOv5's autoanchor) is not supported; list them")
    ok = isinstance(anchors, list) and anchors and all(isinstance(level, list) for level in anchors)
    ok = ok and all(len(level) == len(anchors[0]) and len(level) % 2 == 0 and level for level in anchors)
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for lv in anchors for v in lv)
    if not ok:
        raise ModelConfigError(source, f"'anchors' must be one list of w,h pixel pairs per level, got {anchors!r}")
    return anchors


def _resolve_from(f: Any, i: int, source: str) -> list[int]:
    """Validates a `from` entry; returns it as a list. Layer i sees outputs 0..i-1 (negative: counted back)."""
    indices = [f] if isinstance(f, int) and not isinstance(f, bool) else f
    if not isinstance(indices, list) or not indices or not all(isinstance(x, int) for x in indices):
        raise ModelConfigError(source, f"'from' must be an integer or a list of integers, got {f!r}", i)
    for x in indices:
        valid = x == -1 if i == 0 else -i <= x < i
        if not valid:
            raise ModelConfigError(source, f"'from' index {x} does not exist (layers before it: 0..{i - 1})", i)
    return indices


def parse_model(
    cfg: dict, in_channels: int, transformer: TransformerConfig, source: str
) -> tuple[nn.Sequential, list[int]]:
    """YOLOv5's parse_model: the layers as an nn.Sequential (each tagged .i, .f, .type, .n, .args, .np) and the
    indices of layers whose outputs later layers read."""
    nc = cfg["nc"]
    anchors = cfg["anchors"]
    depth_gain = _positive_number(cfg, "depth_multiple", source)
    width_gain = _positive_number(cfg, "width_multiple", source)
    outputs_per_level = len(anchors[0]) // 2 * (nc + 5)
    for key in ("backbone", "head"):
        if not isinstance(cfg.get(key), list):
            raise ModelConfigError(source, f"'{key}' must be a list of [from, number, module, args]")

    layers: list[nn.Module] = []
    save: list[int] = []
    channels = [in_channels]  # output channels of every layer so far; before layer 0, the input
    for i, entry in enumerate(cfg["backbone"] + cfg["head"]):
        if not isinstance(entry, list) or len(entry) != 4:
            raise ModelConfigError(source, f"expected [from, number, module, args], got {entry!r}", i)
        f, n, name, args = entry
        if name not in MODULES:
            raise ModelConfigError(source, f"unknown module {name!r} (known: {', '.join(MODULES)})", i)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ModelConfigError(source, f"'number' must be an integer >= 1, got {n!r}", i)
        if not isinstance(args, list):
            raise ModelConfigError(source, f"'args' must be a list, got {args!r}", i)
        module_type = MODULES[name]
        from_list = _resolve_from(f, i, source)
        # YOLOv5 eval()s string arguments; only these names ever appear in its yamls.
        args = [{"nc": nc, "anchors": anchors, "None": None}.get(a, a) if isinstance(a, str) else a for a in args]
        n = max(round(n * depth_gain), 1) if n > 1 else n
        repeats = n
        kwargs: dict[str, Any] = {}

        if module_type not in (Concat, Detect):
            if len(from_list) != 1:
                raise ModelConfigError(source, f"{name} takes one input, 'from' lists {f!r}", i)
            f = from_list[0]  # a one-element list means the same as the bare index
        if module_type in _CHANNEL_MODULES:
            if not args or isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 1:
                raise ModelConfigError(source, f"{name} needs its output channels as first arg, got {args!r}", i)
            c_in, c_out = channels[f], args[0]
            if c_out != outputs_per_level:
                c_out = make_divisible(c_out * width_gain, 8)
            args = [c_in, c_out, *args[1:]]
            if module_type in _REPEAT_INSIDE_MODULES:
                args.insert(2, n)
                repeats = 1
            if module_type in TRANSFORMER_C3_TYPES:
                kwargs.update(dataclasses.asdict(transformer))
        elif module_type is Concat:
            c_out = sum(channels[x] for x in from_list)
        elif module_type is Detect:
            if len(args) != 2:
                raise ModelConfigError(source, f"Detect args must be [nc, anchors], got {args!r}", i)
            if args[0] != nc:
                raise ModelConfigError(source, f"Detect's class count {args[0]!r} differs from nc={nc}; write nc", i)
            args[1] = _check_anchors(args[1], source)
            if len(args[1]) != len(from_list):
                raise ModelConfigError(
                    source, f"Detect reads {len(from_list)} levels but 'anchors' has {len(args[1])}", i
                )
            args.append([channels[x] for x in from_list])
            c_out = 0  # nothing reads Detect's output channels
        else:
            c_out = channels[f]

        try:
            built = [module_type(*args, **kwargs) for _ in range(repeats)]
        except (TypeError, ValueError, RuntimeError) as error:
            raise ModelConfigError(source, f"cannot build {name}{args}: {error}", i) from error
        layer = nn.Sequential(*built) if repeats > 1 else built[0]
        layer.i, layer.f, layer.type, layer.n = i, f, _module_path(module_type), n
        layer.args = args
        layer.np = sum(p.numel() for p in layer.parameters())
        save.extend(x % i for x in from_list if x != -1)
        layers.append(layer)
        if i == 0:
            channels = []
        channels.append(c_out)
    return nn.Sequential(*layers), sorted(set(save))


class DetectionModel(nn.Module):
    """A YOLOv5-style detector built from a model yaml (path) or an already-loaded dict.

    Args:
        cfg: model yaml path, or the dict it would load to (deep-copied).
        ch: input channels (a ``ch`` key in the yaml wins, as in YOLOv5).
        nc: number of classes; overrides the yaml's ``nc``.
        transformer: switches for every C3TR/C3TRv5, merged key by key over the yaml's ``transformer:``.

    ``forward(x)``: x float (B, ch, H, W) in [0, 1], H and W multiples of 32. Train mode returns the nl raw tensors
    (B, na, h_i, w_i, 5 + nc); eval mode returns ``(decoded (B, N, 5 + nc), raw)`` — see `Detect`.
    """

    names: list[str]  # the class names, set by whoever knows them (the trainer, a weights file)

    def __init__(
        self,
        cfg: str | os.PathLike | dict,
        ch: int = 3,
        nc: int | None = None,
        transformer: dict | None = None,
    ) -> None:
        super().__init__()
        self.yaml, self.yaml_file = self._load(cfg)
        source = self.yaml_file or "<model dict>"
        # As in YOLOv5, a 'ch' key in the yaml wins over the argument, and the yaml records it either way.
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if isinstance(ch, bool) or not isinstance(ch, int) or ch <= 0:
            raise ModelConfigError(source, f"'ch' (input channels) must be an integer > 0, got {ch!r}")
        if nc is not None:
            self.yaml["nc"] = nc
        nc = self.yaml.get("nc")
        if isinstance(nc, bool) or not isinstance(nc, int) or nc <= 0:
            raise ModelConfigError(source, f"'nc' must be an integer > 0, got {nc!r}")
        self.yaml["anchors"] = _check_anchors(self.yaml.get("anchors"), source)
        merged = {**(self.yaml.get("transformer") or {}), **(transformer or {})}
        try:
            transformer_config = TransformerConfig.from_yaml(merged)
        except ValueError as error:
            raise ModelConfigError(source, str(error)) from error
        if merged:
            self.yaml["transformer"] = merged

        self.nc = nc
        self.in_channels = ch
        self.model, self.save = parse_model(self.yaml, ch, transformer_config, source)
        last = self.model[-1]
        if not isinstance(last, Detect) or sum(isinstance(m, Detect) for m in self.model) != 1:
            raise ModelConfigError(source, "the model needs exactly one Detect, as its last layer", len(self.model) - 1)
        self.detect: Detect = last
        self._set_strides_and_anchors(ch, source)
        self.detect.initialize_biases()

    @staticmethod
    def _load(cfg: str | os.PathLike | dict) -> tuple[dict, str | None]:
        if isinstance(cfg, dict):
            return copy.deepcopy(cfg), None
        path = Path(cfg)
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ModelConfigError(str(path), f"not valid yaml: {error}") from error
        if not isinstance(loaded, dict):
            raise ModelConfigError(str(path), "expected a mapping at the top level")
        return loaded, str(path)

    @property
    def stride(self) -> torch.Tensor:
        """Stride of each detection level, e.g. tensor([8., 16., 32.])."""
        return self.detect.stride

    def _set_strides_and_anchors(self, ch: int, source: str) -> None:
        """Measures each level's stride with a dry run (in eval mode, so BatchNorm statistics stay untouched),
        then converts the anchors from pixels to grid units as the loss and decoding expect."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            features = self._detect_inputs(torch.zeros(1, ch, _DRY_RUN_SIZE, _DRY_RUN_SIZE), source=source)
        self.train(was_training)
        strides = torch.tensor([_DRY_RUN_SIZE / feature.shape[-2] for feature in features])
        detect = self.detect
        mean_area = detect.anchors.prod(-1).mean(-1)  # (nl,)
        if (mean_area[-1] - mean_area[0]).sign() * (strides[-1] - strides[0]).sign() < 0:
            detect.anchors.copy_(detect.anchors.flip(0))  # YOLOv5's check_anchor_order: small anchors at stride 8
        detect.stride.copy_(strides)
        self.max_stride = int(strides.max())  # a Python int, so forward's input check never syncs with the GPU
        detect.anchors.div_(strides.view(-1, 1, 1))

    def _detect_inputs(self, x: torch.Tensor, source: str | None = None) -> list[torch.Tensor]:
        """Runs every layer but Detect; returns the feature maps Detect reads. With `source`, a failing layer
        raises ModelConfigError naming it (used by the build-time dry run)."""
        outputs: list[torch.Tensor | None] = []
        for layer in self.model:
            if layer is self.detect:
                break
            if layer.f != -1:
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            if source is None:
                x = layer(x)
            else:
                try:
                    x = layer(x)
                except (RuntimeError, TypeError, ValueError) as error:
                    raise ModelConfigError(
                        source, f"inputs do not fit (dry run at {_DRY_RUN_SIZE}x{_DRY_RUN_SIZE}): {error}", layer.i
                    ) from error
            outputs.append(x if layer.i in self.save else None)
        f = [self.detect.f] if isinstance(self.detect.f, int) else self.detect.f
        return [x if j == -1 else outputs[j] for j in f]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[-2] % self.max_stride or x.shape[-1] % self.max_stride:
            raise ValueError(
                f"expected images (B, C, H, W) with H and W multiples of {self.max_stride}, got {tuple(x.shape)}"
            )
        return self.detect(self._detect_inputs(x))
