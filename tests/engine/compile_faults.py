"""Run in place of `python -m yolotr` by tests/engine/test_fast_path.py: registers torch.compile backends that fail the
way a GPU machine's compiler can, then runs yolotr's command line. Backends are per process, so they are registered
here, in the trainer's own process (and in each of torchrun's workers).

    fails_in_forward    the forward's compilation raises (no C compiler, an Inductor error)
    fails_in_backward   the forward compiles; the backward's compilation, lazy, raises at the first backward
    fails_on_rank_1     the forward's compilation raises on rank 1 only
    graph_break_storm   compiles, and Dynamo counts a hundred graph breaks

`--channels-last-fails` (before the command) makes every channels-last forward raise, as a kernel without a
channels-last implementation would.
"""

from __future__ import annotations

import os
import sys

from torch._dynamo import register_backend
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters


def _no_compiler(gm, example_inputs):
    raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")


def _identity(gm, example_inputs):
    return gm.forward


def _forward_on_rank_0_only(gm, example_inputs):
    if os.environ.get("RANK") == "1":
        _no_compiler(gm, example_inputs)
    return gm.forward


def _storm(gm, example_inputs):
    counters["graph_break"]["a break as Dynamo counts one"] += 100
    return gm.forward


register_backend(name="fails_in_forward", compiler_fn=_no_compiler)
register_backend(name="fails_in_backward", compiler_fn=aot_autograd(fw_compiler=_identity, bw_compiler=_no_compiler))
register_backend(name="fails_on_rank_1", compiler_fn=_forward_on_rank_0_only)
register_backend(name="graph_break_storm", compiler_fn=_storm)



def _fail_channels_last() -> None:
    from yolotr.engine.fast_path import FastPath

    contiguous_images = FastPath.images

    def images(self, batch):
        if self.channels_last:
            raise RuntimeError("no channels-last kernel for this convolution on this device")
        return contiguous_images(self, batch)

    FastPath.images = images


if __name__ == "__main__":
    from yolotr.cli import main

    args = sys.argv[1:]
    if args[:1] == ["--channels-last-fails"]:
        _fail_channels_last()
        args = args[1:]
    sys.exit(main(args))
