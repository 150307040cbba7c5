"""Run under torchrun by tests/engine/test_deepspeed_autocast.py: builds yolotr's trainer from a config and prints,
as one json line, the dtype of the first convolution's output in one training forward through the step backend.

`--as-on-cuda` makes `torch.is_autocast_enabled()` (no device argument: CUDA's autocast) answer for the CPU's
autocast, the one thing a CPU run lacks to meet what DeepSpeed's engine meets on a GPU: an enclosing autocast that it
sees. DeepSpeed's forward asks exactly that question (deepspeed/runtime/torch_autocast.py)."""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--as-on-cuda", action="store_true")
    args = parser.parse_args()
    if args.as_on_cuda:
        sees_cpu_autocast = torch.is_autocast_enabled

        def as_on_cuda(device_type: str | None = None) -> bool:
            return sees_cpu_autocast("cpu" if device_type is None else device_type)

        torch.is_autocast_enabled = as_on_cuda

    from yolotr.config import load_config
    from yolotr.engine.runtime import setup_runtime
    from yolotr.engine.trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg, setup_runtime(cfg))
    first_conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    seen: list[torch.dtype] = []
    first_conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    images = torch.rand(2, 3, cfg.train.imgsz, cfg.train.imgsz, device=trainer.device)
    with trainer.autocast:
        trainer.backend.module(images)
    print(json.dumps({"backend": trainer.runtime.kind, "precision": cfg.train.precision,
                      "first_conv_output": str(seen[0]).removeprefix("torch.")}))


if __name__ == "__main__":
    main()
