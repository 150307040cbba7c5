"""Which process am I, on what device, under which data-parallel backend — decided once, from the launcher's env.

One code path serves every launcher: `accelerate launch` (DDP or `--use_deepspeed`), `torchrun`, and a plain single
process, on GPUs (NCCL) or on CPU (gloo). Accelerate does the process-group setup and the DDP / DeepSpeed wrapping;
this module supplies the settings it cannot guess on a CPU machine.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch

from yolotr.config import Config
from yolotr.distributed import init_process_group

if TYPE_CHECKING:  # accelerate is imported when a runtime is made, not with this module
    from accelerate import Accelerator

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """This process's place in the job: its rank, its device, and the data-parallel kind the job runs."""

    accelerator: Accelerator
    kind: str  # "single", "ddp" or "deepspeed"
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_the_launcher() -> None:
    """Under a launcher (torchrun, accelerate, Slurm's srun), ask the kernel for SIGTERM when the launcher dies.

    The launchers start their workers in process sessions of their own, so a launcher killed with -9 (or lost with
    its node's agent) left its ranks training on, still writing the run folder. SIGTERM is a preemption notice
    (engine/preemption.py): the ranks agree on it at the next step, checkpoint and exit 75. Linux only; elsewhere
    nothing changes."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def wants_deepspeed(cfg: Config) -> bool:
    launched_with = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return cfg.distributed.backend == "deepspeed" or (cfg.distributed.backend == "auto" and launched_with)


def setup_runtime(cfg: Config) -> Runtime:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    on_gpu = torch.cuda.is_available()
    deepspeed = wants_deepspeed(cfg)
    if not on_gpu:
        # Facts about accelerate on CPU: under torchrun it only sees the other ranks when ACCELERATE_USE_CPU=1, and
        # with DeepSpeed that same variable silently drops DeepSpeed, which needs DS_ACCELERATOR=cpu instead.
        if deepspeed:
            os.environ.pop("ACCELERATE_USE_CPU", None)
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        elif world_size > 1:
            os.environ["ACCELERATE_USE_CPU"] = "1"
    # Buffers (BatchNorm statistics) are broadcast from rank 0 each forward, so every rank's EMA sees the same.
    kwargs = [DistributedDataParallelKwargs(broadcast_buffers=True, find_unused_parameters=False)]
    if world_size > 1:
        # Without an explicit gloo backend, DeepSpeed on CPU makes every rank believe it is rank 0 of 1.
        backend = "nccl" if on_gpu else "gloo"
        kwargs.append(InitProcessGroupKwargs(backend=backend, timeout=timedelta(seconds=cfg.distributed.timeout_s)))
    if world_size > 1 and not torch.distributed.is_initialized():
        init_process_group("nccl" if on_gpu else "gloo", timedelta(seconds=cfg.distributed.timeout_s))
    plugin = None
    if deepspeed:
        plugin = _deepspeed_plugin(cfg)
    accelerator = Accelerator(mixed_precision="no", kwargs_handlers=kwargs, deepspeed_plugin=plugin, cpu=not on_gpu and not deepspeed)
    kind = "deepspeed" if deepspeed else ("ddp" if accelerator.num_processes > 1 else "single")
    return Runtime(
        accelerator=accelerator,
        kind=kind,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        local_rank=accelerator.local_process_index,
        device=accelerator.device,
    )


def _deepspeed_plugin(cfg: Config):
    import json

    from accelerate.utils import DeepSpeedPlugin

    _skip_accelerate_transformers_hook()
    path = cfg.distributed.deepspeed_config or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if path in (None, "", "none"):
        path = "configs/deepspeed/zero2.json"
    with open(path) as fh:
        ds_config = json.load(fh)
    # yolotr owns the batch arithmetic and the clip: DeepSpeed must agree with the yolotr config. The clip threshold,
    # in DeepSpeed's units, is set with the accumulation by the DeepSpeed step backend (engine/backends/deepspeed.py).
    ds_config["train_micro_batch_size_per_gpu"] = cfg.train.batch_size // int(os.environ.get("WORLD_SIZE", "1"))
    ds_config.pop("train_batch_size", None)
    ds_config["gradient_accumulation_steps"] = 1  # the trainer sets its own accumulation before prepare()
    # fp32 master weights and gradients, the forward autocast as train.precision says (engine/backends/deepspeed.py).
    for section in ("bf16", "fp16", "torch_autocast"):
        if ds_config.get(section, {}).get("enabled"):
            log.warning(f"{path}: '{section}' is ignored: yolotr runs DeepSpeed with fp32 master weights and "
                        "autocasts the forward itself (train.precision)")
        ds_config.pop(section, None)
    ds_config.update(forward_autocast_section(cfg.train.precision))
    return DeepSpeedPlugin(hf_ds_config=ds_config)


def forward_autocast_section(precision: str) -> dict:
    """DeepSpeed's `torch_autocast` section for train.precision. Without it the engine's forward turns an enclosing
    CUDA autocast *off* ("torch.autocast is enabled outside DeepSpeed but disabled within the DeepSpeed engine"):
    ZeRO then ran its forward in fp32 on a GPU, with other numerics than DDP's bf16 (and, likely, the H200's 433
    against DDP's 857 img/s). The section only sets the forward's dtype: no module is listed as lower-precision safe,
    so ZeRO reduces every gradient in fp32, as DDP does."""
    if precision != "bf16":
        return {}  # fp32: no autocast; fp16 is refused under DeepSpeed (config/load.py)
    return {"torch_autocast": {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}}


def _skip_accelerate_transformers_hook() -> None:
    """accelerate ≥1.x calls DeepSpeedPlugin.set_deepspeed_weakref, which only serves transformers' ZeRO-3 model
    loading (yolotr never uses it): it raises when transformers is not installed, and imports transformers'
    DeepSpeed integration (slow, and tied to its version) when it is. A no-op either way."""
    from accelerate.utils import DeepSpeedPlugin

    DeepSpeedPlugin.set_deepspeed_weakref = lambda self: None
