"""launch/launch.sh and the accelerate config files in launch/accelerate/: real `accelerate launch` runs on CPU,
DDP and DeepSpeed ZeRO-2 with 2 processes each, and clear errors for impossible requests."""

import json
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from tests.engine.conftest import REPO, check, final_digests
from tests.launch.conftest import events, last_train_step, run_script

CONFIGS = REPO / "launch" / "accelerate"
EXPECTED_MODE = {
    "single_gpu.yaml": DistributedType.NO,
    "multi_gpu.yaml": DistributedType.MULTI_GPU,
    "multi_node.yaml": DistributedType.MULTI_GPU,
    "deepspeed_zero1.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
}


def test_every_accelerate_config_is_read_by_accelerate_as_the_mode_its_name_says():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED_MODE)
    for name, mode in EXPECTED_MODE.items():
        config = load_config_from_file(str(CONFIGS / name))  # unknown keys raise here
        assert config.distributed_type == mode, name
        assert config.mixed_precision in (None, "no"), f"{name}: yolotr autocasts itself; accelerate must not"


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_configs_point_at_the_json_of_their_zero_stage(stage):
    config = load_config_from_file(str(CONFIGS / f"deepspeed_zero{stage}.yaml"))
    ds_json = json.loads((REPO / config.deepspeed_config["deepspeed_config_file"]).read_text())
    assert ds_json["zero_optimization"]["stage"] == stage
    # Precision is yolotr's (bf16 autocast over fp32 master weights): a bf16/fp16 section would be ignored.
    assert not {"bf16", "fp16"} & set(ds_json)


def test_multi_node_config_takes_rank_and_address_from_the_command_line():
    config = load_config_from_file(str(CONFIGS / "multi_node.yaml"))
    assert config.num_machines > 1 and config.main_process_ip is None  # never a hard-coded host
    assert config.same_network and config.rdzv_backend == "static"


@pytest.mark.slow
def test_launch_sh_runs_ddp_with_2_processes_on_cpu(train_config, tmp_path):
    config = train_config()
    run_dir = tmp_path / "run"

    check(run_script(["bash", "launch/launch.sh", "--procs", "2", "--", "--config", str(config)]))

    start = events(run_dir, "start")[0]
    assert (start["world_size"], start["backend"]) == (2, "ddp")
    assert last_train_step(run_dir) == 8
    digests = final_digests(run_dir)
    assert digests[0]["model"] == digests[1]["model"]
    assert digests[0]["optimizer"] == digests[1]["optimizer"]  # DDP: every rank holds the whole optimizer


@pytest.mark.slow
def test_launch_sh_runs_deepspeed_zero2_with_2_processes_on_cpu(train_config, tmp_path):
    config = train_config()
    run_dir = tmp_path / "run"

    check(run_script(["bash", "launch/launch.sh", "--procs", "2", "--deepspeed", "zero2", "--",
                      "--config", str(config)]))

    start = events(run_dir, "start")[0]
    assert (start["world_size"], start["backend"]) == (2, "deepspeed")
    assert last_train_step(run_dir) == 8
    assert json.loads((run_dir / "exit.json").read_text())["exit_code"] == 0
    digests = final_digests(run_dir)
    assert digests[0]["model"] == digests[1]["model"]
    assert digests[0]["optimizer"] != digests[1]["optimizer"]  # ZeRO: each rank holds only its slice of the state


@pytest.mark.parametrize("args, env, message", [
    (["--deepspeed", "zero3"], {}, "configs/deepspeed/zero3.json"),
    (["--nodes", "2"], {"MAIN_ADDR": ""}, "needs MAIN_ADDR"),
], ids=["unknown-zero-stage", "multi-node-without-main-address"])
def test_launch_sh_refuses_an_impossible_request_with_exit_2_and_says_why(args, env, message):
    result = run_script(["bash", "launch/launch.sh", *args, "--", "--config", "configs/train/demo.yaml"], env=env,
                        timeout=60)
    assert result.returncode == 2 and message in result.stdout, result.stdout


def test_launch_sh_without_a_venv_names_the_missing_python(tmp_path: Path):
    result = run_script(["bash", "launch/launch.sh", "--", "--config", "configs/train/demo.yaml"],
                        env={"YOLOTR_VENV": str(tmp_path / "nowhere")}, timeout=60)
    assert result.returncode == 1 and str(tmp_path / "nowhere" / "bin" / "python") in result.stdout
