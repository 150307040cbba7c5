"""Which process am I, on what device, under which data-parallel backend — decided once, from the launcher's env.

One code path serves every launcher: `accelerate launch` (DDP or `--use_deepspeed`), `torchrun`, and a plain single
process, on GPUs (NCCL) or on CPU (gloo). Accelerate does the process-group setup and the DDP / DeepSpeed wrapping;
this module supplies the settings it cannot guess on a CPU machine.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch

from yolotr.engine.config import Config


@dataclass
class Backend:
    accelerator: object  # accelerate.Accelerator
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


def prepare_ddp(backend: Backend, module: torch.nn.Module) -> torch.nn.Module:
    """`module` wrapped by Accelerate in DistributedDataParallel when there are several ranks, as is otherwise."""
    if not backend.distributed:
        return module
    ddp = backend.accelerator.prepare(module)
    if hasattr(ddp, "_set_ddp_runtime_logging_sample_rate"):
        # DDP times its first 10 iterations and then every 100th with CUDA events that the host waits on at the
        # next forward (reducer_cuda.cpp): a sync torch's sync check does not report. Now only the first 10.
        ddp._set_ddp_runtime_logging_sample_rate(2**31 - 1)
    return ddp


def wants_deepspeed(cfg: Config) -> bool:
    launched_with = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return cfg.distributed.backend == "deepspeed" or (cfg.distributed.backend == "auto" and launched_with)


def setup_backend(cfg: Config) -> Backend:
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
        _init_process_group("nccl" if on_gpu else "gloo", timedelta(seconds=cfg.distributed.timeout_s))
    plugin = None
    if deepspeed:
        plugin = _deepspeed_plugin(cfg)
    accelerator = Accelerator(mixed_precision="no", kwargs_handlers=kwargs, deepspeed_plugin=plugin, cpu=not on_gpu and not deepspeed)
    kind = "deepspeed" if deepspeed else ("ddp" if accelerator.num_processes > 1 else "single")
    return Backend(
        accelerator=accelerator,
        kind=kind,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        local_rank=accelerator.local_process_index,
        device=accelerator.device,
    )


def _init_process_group(backend: str, timeout: timedelta) -> None:
    """Under torchrun's elastic agent, every restart attempt reuses the agent's TCP store, where the previous
    attempt's gloo addresses are still written: a new rank may read a dead peer's address and hang or fail to
    connect (seen with torch 2.14 and `--max-restarts`). A key prefix per attempt keeps attempts apart."""
    import torch.distributed as dist

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout)
        return
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"yolotr/attempt-{attempt}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


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
    # in DeepSpeed's units, is set with the accumulation by the trainer (deepspeed_path.prepare_engine).
    ds_config["train_micro_batch_size_per_gpu"] = cfg.train.batch_size // int(os.environ.get("WORLD_SIZE", "1"))
    ds_config.pop("train_batch_size", None)
    ds_config["gradient_accumulation_steps"] = 1  # the trainer sets its own accumulation before prepare()
    # fp32 master weights and gradients; yolotr autocasts the forward to bf16 itself (see deepspeed_path.py).
    for section in ("bf16", "fp16", "torch_autocast"):
        if ds_config.get(section, {}).get("enabled"):
            print(f"[yolotr] {path}: '{section}' is ignored: yolotr runs DeepSpeed with fp32 master weights and "
                  "autocasts the forward itself (train.precision)", file=sys.stderr)
        ds_config.pop(section, None)
    return DeepSpeedPlugin(hf_ds_config=ds_config)


def _skip_accelerate_transformers_hook() -> None:
    """accelerate ≥1.x calls DeepSpeedPlugin.set_deepspeed_weakref, which only serves transformers' ZeRO-3 model
    loading (yolotr never uses it): it raises when transformers is not installed, and imports transformers'
    DeepSpeed integration (slow, and tied to its version) when it is. A no-op either way."""
    from accelerate.utils import DeepSpeedPlugin

    DeepSpeedPlugin.set_deepspeed_weakref = lambda self: None
