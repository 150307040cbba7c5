"""The checkpoint writer process: same files as the in-thread writer, deaf to preemption signals, replaceable."""

import os
import signal

import torch
import torch.distributed.checkpoint as dcp

from yolotr.checkpoint.host_stage import HostStager
from yolotr.checkpoint.writer_process import ThreadWriter, WriterProcess


def _state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    tensors = {"model": {"w": torch.randn(3, 4, generator=g), "n": torch.tensor(7)},
               "optimizer": {"state": {"w": {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.01 * seed,
                                                                                            "params": ["w"]}]}}
    return {"tensors": tensors, "rng": {"torch": torch.get_rng_state()}}


def _read(folder):
    template = {"model": {"w": torch.zeros(3, 4), "n": torch.tensor(0)},
                "optimizer": {"state": {"w": {"step": torch.tensor(0.0)}}, "param_groups": [{"lr": 0.0,
                                                                                             "params": ["w"]}]}}
    dcp.load(template, checkpoint_id=folder / "state", no_dist=True)
    return template


def test_the_writer_process_writes_what_the_thread_writer_writes_and_survives_preemption_signals(tmp_path):
    writer = WriterProcess()
    writer.start()
    os.kill(writer._proc.pid, signal.SIGUSR1)  # as Slurm and launchers signal the whole process group
    os.kill(writer._proc.pid, signal.SIGTERM)
    stager = HostStager(shared=True)
    try:
        for seed in (1, 2):  # a second save reuses the shared buffers with new values
            _, plain = stager.stage(_state(seed))
            (tmp_path / f"p{seed}").mkdir()
            (tmp_path / f"t{seed}").mkdir()
            by_process = writer.write(stager, plain, {"step": seed}, 0, tmp_path / f"p{seed}")
            by_thread = ThreadWriter().write(stager, plain, {"step": seed}, 0, tmp_path / f"t{seed}")
            assert [p.relative_to(tmp_path / f"p{seed}") for p in by_process] == \
                   [p.relative_to(tmp_path / f"t{seed}") for p in by_thread]
            a, b = _read(tmp_path / f"p{seed}"), _read(tmp_path / f"t{seed}")
            assert torch.equal(a["model"]["w"], _state(seed)["tensors"]["model"]["w"])
            assert torch.equal(a["model"]["w"], b["model"]["w"]) and a["optimizer"] == b["optimizer"]
        assert writer.failed is None and writer._proc.is_alive()
    finally:
        writer.close()


def test_when_the_writer_process_dies_the_thread_writes_instead_with_a_warning(tmp_path, capsys):
    writer = WriterProcess()
    writer.start()
    writer._proc.kill()
    writer._proc.join()
    stager = HostStager(shared=True)
    _, plain = stager.stage(_state(1))
    written = writer.write(stager, plain, {"step": 1}, 0, tmp_path)
    assert (tmp_path / "trainer.json") in written and torch.equal(_read(tmp_path)["model"]["w"],
                                                                   _state(1)["tensors"]["model"]["w"])
    assert "writer process is gone" in writer.failed and "writer process is gone" in capsys.readouterr().err
    writer.close()


def test_without_room_in_dev_shm_the_copy_stays_private_and_the_thread_writes(tmp_path, monkeypatch, capsys):
    # A default container has 64 MB of /dev/shm; touching shared pages beyond it would kill the trainer (SIGBUS).
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(64 << 20, 64 << 20, 16))
    stager = HostStager(shared=True)
    _, plain = stager.stage(_state(1))
    assert not stager.shared and "/dev/shm has no room" in capsys.readouterr().err
    writer = WriterProcess()
    written = writer.write(stager, plain, {"step": 1}, 0, tmp_path)
    assert writer._proc is None and (tmp_path / "trainer.json") in written  # no process was started
    assert torch.equal(_read(tmp_path)["model"]["w"], _state(1)["tensors"]["model"]["w"])


def test_an_unusable_dev_shm_falls_back_to_private_memory_and_the_thread(tmp_path, monkeypatch, capsys):
    # A read-only or missing /dev/shm: torch cannot create the shared segment (shm_open fails).
    def refuse(self):
        raise RuntimeError("unable to open shared memory object </torch_1_1> in read-write mode: Read-only file system")

    monkeypatch.setattr(torch.Tensor, "share_memory_", refuse)
    stager = HostStager(shared=True)
    _, plain = stager.stage(_state(1))
    assert not stager.shared and "cannot use shared memory" in capsys.readouterr().err
    writer = WriterProcess()
    written = writer.write(stager, plain, {"step": 1}, 0, tmp_path)
    assert writer._proc is None and (tmp_path / "trainer.json") in written
    assert torch.equal(_read(tmp_path)["model"]["w"], _state(1)["tensors"]["model"]["w"])
