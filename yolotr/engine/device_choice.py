"""`device=` as ultralytics takes it (`cpu`, `0`, `cuda:1`, `0,1`): which devices this process may see, set through
CUDA_VISIBLE_DEVICES before torch first touches CUDA (the runtime then takes what it sees, engine/runtime.py).

Light: no torch import, so a bad value is answered at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from yolotr.config.tree import ConfigError


@dataclass(frozen=True)
class DeviceRequest:
    gpus: tuple[int, ...]
    """GPU indices asked for; empty for the CPU."""

    @property
    def ranks(self) -> int:
        return max(1, len(self.gpus))


def parse_device(value: str | int | list | tuple | None) -> DeviceRequest | None:
    """None when no device was asked for; raises ConfigError naming `device` for a value it cannot use."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return DeviceRequest((value,))
    items = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    if items == ["cpu"]:
        return DeviceRequest(())
    gpus = []
    for item in items:
        index = item.removeprefix("cuda:")
        if not index.isdigit():
            raise ConfigError("device", f"expected cpu, a GPU index (0, cuda:0) or several (0,1), got {value!r}",
                              "command line")
        gpus.append(int(index))
    if len(set(gpus)) != len(gpus):
        raise ConfigError("device", f"names a GPU twice: {value!r}", "command line")
    return DeviceRequest(tuple(gpus))


def apply_device(request: DeviceRequest, environ=os.environ) -> None:
    """Lets this process (and the ranks it starts) see only the requested devices: none for the CPU."""
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in request.gpus)
