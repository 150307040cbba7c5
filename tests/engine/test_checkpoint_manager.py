"""The checkpoint manager in one process: what a commit writes, and what it reports."""

import json
import shutil

import pytest

from yolotr.checkpoint.manager import CheckpointError, CheckpointManager, verify


def _writer(payload: bytes):
    def write(tmp):
        (tmp / "state").mkdir()
        files = [tmp / "state" / "a.bin", tmp / "trainer.json"]
        files[0].write_bytes(payload)
        files[1].write_text("{}")
        return files

    return write


@pytest.mark.parametrize("asynchronous", [True, False])
def test_a_commit_lists_every_file_with_its_hash_keeps_no_sidecar_and_reports_its_stall(tmp_path, asynchronous):
    commits = []
    manager = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=2, on_commit=commits.append)
    manager.save(5, write_rank_files=_writer(b"x" * 4096), asynchronous=asynchronous)
    if asynchronous:
        assert not commits  # reported once it has landed, at the next commit or at close()
        manager.close()
    final = manager.committed()[-1]

    assert final.name == "step-00000005" and (tmp_path / "checkpoints" / "latest").read_text().strip() == final.name
    manifest = json.loads((final / "manifest.json").read_text())
    on_disk = sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk == ["state/a.bin", "trainer.json"]  # the hash sidecar is gone
    assert verify(final) is None
    (final / "state" / "a.bin").write_bytes(b"y" * 4096)  # same size, other bytes
    assert verify(final) == "sha256 mismatch for state/a.bin"
    [stats] = commits
    assert stats.step == 5 and stats.asynchronous == asynchronous and stats.stall_s > 0 and stats.write_s > 0


def test_a_file_written_outside_the_rank_writer_is_hashed_at_commit(tmp_path):
    manager = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=2)
    manager.save(3, write_sync=lambda tmp: (tmp / "ds.bin").write_bytes(b"z" * 100),
                 write_rank_files=_writer(b"x"), asynchronous=True)
    manager.close()
    final = manager.committed()[-1]
    assert "ds.bin" in json.loads((final / "manifest.json").read_text())["files"] and verify(final) is None


def test_a_second_save_of_the_same_step_waits_for_the_first_to_land(tmp_path):
    # The periodic save, then the save after validation (which records the fitness), at the same step; the first
    # commit is still landing (slowed down) when the second save starts over the same folder.
    commits = []
    manager = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=2, pause_before_commit_s=0.3,
                                on_commit=commits.append)
    manager.save(12, write_rank_files=_writer(b"x" * 64), asynchronous=True)
    manager.save(12, write_rank_files=_writer(b"y" * 64), asynchronous=True, fitness=0.5)
    manager.close()
    [final] = manager.committed()
    assert verify(final) is None
    assert json.loads((final / "manifest.json").read_text())["fitness"] == 0.5
    assert (final / "state" / "a.bin").read_bytes() == b"y" * 64
    assert [c.step for c in commits] == [12, 12]


def test_a_commit_that_fails_to_land_is_raised_not_reported_as_a_checkpoint(tmp_path):
    commits = []
    manager = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=2, pause_before_commit_s=0.3,
                                on_commit=commits.append)
    manager.save(4, write_rank_files=_writer(b"x"), asynchronous=True)
    manager.wait()  # written and committed: rank 0 lands it in the background
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000004.tmp")  # the folder vanishes under the landing commit
    with pytest.raises(CheckpointError, match="committing the last checkpoint failed"):
        manager.close()
    assert not commits and not manager.committed()


def test_a_pause_from_a_step_holds_that_save_and_not_the_ones_before(tmp_path):
    import time

    manager = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=5, pause_before_commit_s=0.5,
                                pause_from_step=8)
    started = time.perf_counter()
    manager.save(4, write_rank_files=_writer(b"a"), asynchronous=False)
    assert time.perf_counter() - started < 0.4  # step 4 is before the pause
    manager.save(8, write_rank_files=_writer(b"b"))
    manager.wait()
    assert (tmp_path / "checkpoints" / "step-00000008.tmp").is_dir()  # written, its commit held
    assert not (tmp_path / "checkpoints" / "step-00000008").exists()
    manager.close()
    assert [p.name for p in manager.committed()] == ["step-00000004", "step-00000008"]
