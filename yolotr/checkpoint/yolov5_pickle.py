"""Reads ultralytics/yolov5 `.pt` files (released yolov5n/s/m/l/x.pt, a user's last.pt / best.pt, full or stripped)
without running any of their pickle code.

A yolov5 checkpoint is a torch zip archive whose `data.pkl` pickles whole `nn.Module` objects
(`models.yolo.DetectionModel`, `models.common.Conv`, ...), which `torch.load(weights_only=True)` rightly refuses. Here a
`pickle.Unpickler` whose `find_class` is an allow-list rebuilds only:

- tensors and storages (the raw bytes are read from the archive, never through torch's own unpickler);
- plain containers (`collections.OrderedDict`, `set`; dicts, lists and tuples need no global);
- module classes of yolov5 (`models.*`, `utils.*`) and of `torch.nn`, numpy scalars and `pathlib` paths, as *inert*
  stand-ins: creating one runs no code of the class it names, it only records the state the pickle hands it, from
  which the state dict, the model yaml, the class names and the strides are read.

Any other global (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) raises `UnsafePickleError` naming it, before
it could be called.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from yolotr.checkpoint.weights_errors import WeightsFileError

# Storage classes a torch archive names, and the dtype of their elements.
_STORAGE_DTYPES = {
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_PATH_CLASSES = {"PosixPath", "WindowsPath", "Path", "PurePosixPath", "PureWindowsPath", "PurePath"}


class UnsafePickleError(WeightsFileError):
    """A pickle names a global outside the allow-list; nothing it names was called."""


class StandIn:
    """What a pickled object of an allowed class becomes: its qualified name, the arguments it was created with and
    the state pickle gave it (for an `nn.Module`, its `__dict__`: `_parameters`, `_buffers`, `_modules`, ...)."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        # A (state, slotstate) pair is pickle's form for objects with __slots__; a module's state is its __dict__.
        self.state = state if isinstance(state, dict) else {"_state": state}

    @property
    def class_name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]


_stand_in_classes: dict[str, type[StandIn]] = {}


def _stand_in(qualname: str) -> type[StandIn]:
    if qualname not in _stand_in_classes:
        _stand_in_classes[qualname] = type(qualname.rsplit(".", 1)[-1], (StandIn,), {"qualname": qualname})
    return _stand_in_classes[qualname]


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """torch's `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata)`, from our flat
    storage tensor; requires_grad, backward hooks and metadata are dropped."""
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data  # an nn.Parameter's tensor; being a Parameter is of no use here


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles use for bytes objects (numpy scalars' raw data)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _path_as_text(*parts: Any) -> str:
    return str(PurePosixPath(*(str(p) for p in parts)))


_FUNCTIONS = {
    ("collections", "OrderedDict"): dict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _encode_latin1,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch archive's data.pkl with an allow-list of globals (see the module docstring)."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Stand-ins for yolov5's own packages, torch.nn's modules and numpy (a scalar in 'best_fitness').
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "pathlib" and name in _PATH_CLASSES:
            return _path_as_text
        if module.split(".")[0] in ("models", "utils", "numpy") or module.startswith("torch.nn.modules."):
            return _stand_in(f"{module}.{name}")
        raise UnsafePickleError(
            f"{self.source}: refused to load: its pickle calls the global '{module}.{name}', which is not a tensor, "
            "a plain container or a known model class (nothing was run)"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        """A storage reference ('storage', storage type, key, location, numel): its bytes are the archive's
        `data/<key>`, read as a flat tensor of the storage's dtype."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{self.source}: refused to load: unexpected persistent id {pid!r}")
        dtype, key = pid[1].dtype, str(pid[2])
        try:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        except KeyError:
            raise WeightsFileError(f"{self.source}: storage data/{key} is missing from the archive") from None
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(raw, dtype=dtype)


def unpickle_archive(path: str | Path) -> Any:
    """The object a torch zip archive holds, rebuilt by `RestrictedUnpickler`. Raises `UnsafePickleError` for a
    disallowed global and WeightsFileError for a file that is not a torch zip archive."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise WeightsFileError(f"{path}: not a torch zip archive (files saved by torch < 1.6 are not supported: "
                               "load and save them once with a recent torch)") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsFileError(f"{path}: not a torch archive (expected one <name>/data.pkl)")
        prefix = pickles[0].removesuffix("data.pkl")
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise WeightsFileError(f"{path}: saved on a big-endian machine; not supported")
        with archive.open(pickles[0]) as data:
            return RestrictedUnpickler(data, archive, prefix, str(path)).load()


def module_state_dict(module: StandIn, prefix: str = "") -> dict[str, torch.Tensor]:
    """What `nn.Module.state_dict()` would return, from a stand-in's recorded state (persistent buffers only)."""
    state = module.state
    out: dict[str, torch.Tensor] = {}
    for name, value in (state.get("_parameters") or {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
    transient = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor) and name not in transient:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, StandIn):
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


@dataclass
class Yolov5Checkpoint:
    """What a yolov5 .pt holds that a yolotr model can use."""

    model_state: dict[str, torch.Tensor]
    """The 'model' entry's weights, fp32 (in a stripped file they are the EMA's: strip_optimizer puts it there)."""
    ema_state: dict[str, torch.Tensor] | None
    """The 'ema' entry's weights of a full file; None in a stripped one."""
    model_yaml: dict
    names: list[str]
    stride: list[float]
    meta: dict = field(default_factory=dict)
    """epoch, date, imgsz (the training size, when the file records its options)."""


def read_yolov5_checkpoint(path: str | Path) -> Yolov5Checkpoint:
    """Parses a yolov5 checkpoint; WeightsFileError (or UnsafePickleError) naming the file when it is not one."""
    path = Path(path)
    obj = unpickle_archive(path)
    if isinstance(obj, StandIn):  # a bare pickled model (torch.save(model))
        obj = {"model": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), StandIn):
        raise WeightsFileError(f"{path}: not a yolov5 checkpoint (expected a dict with a pickled 'model')")
    model, ema = obj["model"], obj.get("ema")
    state = model.state
    model_yaml = state.get("yaml")
    if not isinstance(model_yaml, dict):
        raise WeightsFileError(f"{path}: the pickled model has no 'yaml' dict; cannot tell its architecture")
    nc = int(model_yaml.get("nc", 0) or state.get("nc", 0))
    names = state.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    names = [str(n) for n in names] if isinstance(names, (list, tuple)) else [f"class{i}" for i in range(nc)]
    stride = state.get("stride")
    opt = obj.get("opt")
    options = opt if isinstance(opt, dict) else {}
    imgsz = options.get("imgsz")
    return Yolov5Checkpoint(
        model_state=_float_state(model),
        ema_state=_float_state(ema) if isinstance(ema, StandIn) else None,
        model_yaml=model_yaml,
        names=names,
        stride=[float(s) for s in stride.tolist()] if isinstance(stride, torch.Tensor) else [],
        meta={"epoch": obj.get("epoch"), "date": obj.get("date"),
              "imgsz": int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz) if imgsz else None},
    )


def _float_state(module: StandIn) -> dict[str, torch.Tensor]:
    """fp32 copies of a stand-in's floating tensors (yolov5 saves fp16), integer ones (BatchNorm counters) as is."""
    return {k: v.float() if v.is_floating_point() else v for k, v in module_state_dict(module).items()}


def as_yolotr_yaml(model_yaml: dict) -> dict:
    """A yolov5 model yaml for yolotr's parser: in yolotr, `C3TR` is yolotr's own Transformer block, and yolov5's
    is `C3TRv5` (the same parameters as yolov5's C3TR)."""
    converted = dict(model_yaml)
    for part in ("backbone", "head"):
        converted[part] = [[*entry[:2], "C3TRv5" if entry[2] == "C3TR" else entry[2], *entry[3:]]
                           for entry in model_yaml.get(part) or []]
    return converted
