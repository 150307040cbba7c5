"""`device=` as ultralytics takes it (`cpu`, `0`, `cuda:1`, `0,1`), and `nproc=` (ranks on the CPU): how many ranks
`yolotr train` starts itself (engine/rank_launch.py) and which devices they may see, set through CUDA_VISIBLE_DEVICES
before torch first touches CUDA (the runtime then takes what it sees, engine/runtime.py).

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
    items = ([str(v) for v in value] if isinstance(value, (list, tuple))
             else str(value).replace(" ", "").strip("[]").split(","))
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


@dataclass(frozen=True)
class RankPlan:
    ranks: int
    """Ranks to start here: 1 trains in this process."""
    gpus: tuple[int, ...] | None
    """The devices the ranks may see (rank i the i-th); empty for the CPU; None: as the environment says."""


def plan_ranks(device, nproc, *, under_launcher: bool, source: str = "command line") -> RankPlan:
    """What `device=` and `nproc=` ask for together; a contradiction raises ConfigError naming the key."""
    request = parse_device(device)
    if nproc in (None, ""):
        count = None
    elif isinstance(nproc, int) and not isinstance(nproc, bool) and nproc >= 1:
        count = nproc
    elif isinstance(nproc, str) and nproc.isdigit() and int(nproc) >= 1:
        count = int(nproc)
    else:
        raise ConfigError("nproc", f"expected a number of ranks >= 1, got {nproc!r}", source)
    if under_launcher and (request is not None or count is not None):
        raise ConfigError("device" if request is not None else "nproc", "the launcher started the ranks already "
                          "(torchrun, accelerate, Slurm): leave device= and nproc= out under it", source)
    if request is None:
        return RankPlan(count or 1, None)
    if request.gpus and count is not None and count != len(request.gpus):
        raise ConfigError("nproc", f"{count} ranks for device={device}: one rank per GPU, give one of them", source)
    return RankPlan(len(request.gpus) if request.gpus else count or 1, request.gpus)


def check_gpus(gpus: tuple[int, ...], source: str = "command line") -> None:
    """Each requested GPU exists here, before any rank starts (a rank would otherwise train on the CPU unasked)."""
    if not gpus:
        return
    import torch

    count = torch.cuda.device_count()  # without creating a CUDA context in this process
    if max(gpus) >= count:
        asked = ",".join(map(str, gpus))
        raise ConfigError("device", f"asks for GPU {asked}, but {count} GPU(s) are visible here "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})", source)


def visible_devices(gpus: tuple[int, ...], environ=os.environ) -> str:
    """CUDA_VISIBLE_DEVICES for these GPUs: indices into an existing CUDA_VISIBLE_DEVICES, as torch counts them."""
    current = environ.get("CUDA_VISIBLE_DEVICES")
    visible = current.split(",") if current else None
    return ",".join(visible[gpu] if visible and gpu < len(visible) else str(gpu) for gpu in gpus)


def apply_device(gpus: tuple[int, ...], environ=os.environ) -> None:
    """Lets this process (and the ranks it starts) see only these devices: none for the CPU."""
    environ["CUDA_VISIBLE_DEVICES"] = visible_devices(gpus, environ)
