"""The forward through each step backend runs in train.precision's dtype.

DeepSpeed's engine turns an enclosing CUDA autocast off unless its own `torch_autocast` section is on: ZeRO-2 trained
in fp32 on a GPU while DDP trained in bf16 (likely most of issue 18's 433 against 857 img/s). On a CPU the engine
does not see the trainer's CPU autocast (it asks `torch.is_autocast_enabled()`, CUDA's), so the probe's
`--as-on-cuda` lets it see it, as it would on a GPU. Without yolotr's section, the deepspeed-bf16 case below saw
float32."""

import json
import os

import pytest
import torch

from tests.engine.conftest import BIN, REPO, free_port, run_in_own_session

pytestmark = pytest.mark.slow


def forward_dtype(config, *overrides: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env.pop("ACCELERATE_USE_CPU", None)  # DeepSpeed on CPU needs DS_ACCELERATOR=cpu instead (runtime.py sets it)
    probe = [str(REPO / "tests/engine/forward_dtype_probe.py"), str(config), *overrides,
             *([] if torch.cuda.is_available() else ["--as-on-cuda"])]
    cmd = [str(BIN / "torchrun"), "--nproc-per-node=1", f"--master-port={free_port()}", *probe]
    result = run_in_own_session(cmd, env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["ddp", "deepspeed"])
@pytest.mark.parametrize("precision, dtype", [("bf16", "bfloat16"), ("fp32", "float32")])
def test_the_forward_runs_in_train_precision_under_each_backend(train_config, backend, precision, dtype):
    config = train_config(checkpoint={"resume": "none"})
    seen = forward_dtype(config, f"distributed.backend={backend}", f"train.precision={precision}")
    assert seen == {"backend": backend if backend == "deepspeed" else "single", "precision": precision,
                    "first_conv_output": dtype}
