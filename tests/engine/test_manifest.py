"""A manifest vouches only for what it lists, in the form the commit writes: any other manifest makes its checkpoint
damaged, so a resume moves it aside and falls back to the checkpoint before it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.conftest import check, read_jsonl, run_train
from yolotr.checkpoint.manager import CheckpointManager, verify
from yolotr.checkpoint.resume import resume_target


def _two_checkpoints(tmp_path: Path) -> CheckpointManager:
    manager = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=3)
    for step in (10, 20):
        def write(tmp, step=step):
            (tmp / "state").mkdir()
            files = [tmp / "state" / "__0_0.distcp", tmp / "trainer.json", tmp / "rank-00000.pt"]
            files[0].write_bytes(bytes([step]) * 4096)
            files[1].write_text(json.dumps({"step": step}))
            files[2].write_bytes(b"rng" * 10)
            return files

        manager.save(step, write_rank_files=write, asynchronous=False)
    manager.close()
    return manager


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder: Path, manifest) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _drop_key(key: str):
    def edit(folder: Path) -> None:
        manifest = _manifest(folder)
        del manifest["files"]["trainer.json"][key]
        _write_manifest(folder, manifest)

    return edit


def _unlisted_file(folder: Path) -> None:
    (folder / "state" / "extra.distcp").write_bytes(b"not vouched for")


def _listed_file_missing(folder: Path) -> None:
    (folder / "rank-00000.pt").unlink()


def _path_escaping(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["files"]["../step-00000010/trainer.json"] = manifest["files"].pop("trainer.json")
    _write_manifest(folder, manifest)


def _sha256_of_wrong_type(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["files"]["trainer.json"]["sha256"] = 1234
    _write_manifest(folder, manifest)


BAD_MANIFESTS = {
    "an empty object": (lambda folder: _write_manifest(folder, {}), "no step, world_size, files"),
    "a list": (lambda folder: _write_manifest(folder, []), "expected an object, got list"),
    "null": (lambda folder: _write_manifest(folder, None), "expected an object, got NoneType"),
    "no file list": (lambda folder: _write_manifest(folder, {"step": 20, "world_size": 1, "files": {}}),
                     "files must be a non-empty object"),
    "an entry without size": (_drop_key("size"), "entry of trainer.json: no size"),
    "an entry without sha256": (_drop_key("sha256"), "entry of trainer.json: no sha256"),
    "a sha256 that is not a hash": (_sha256_of_wrong_type, "sha256 must be 64 hex digits"),
    "a file of the folder it does not list": (_unlisted_file, "state/extra.distcp is not in manifest.json"),
    "a listed file missing": (_listed_file_missing, "missing file rank-00000.pt"),
    "a path with ..": (_path_escaping, "'../step-00000010/trainer.json' is not a plain path inside"),
}


@pytest.mark.parametrize("variant", list(BAD_MANIFESTS))
def test_a_bad_manifest_makes_its_checkpoint_damaged_and_resume_falls_back_to_the_one_before(tmp_path, variant):
    manager = _two_checkpoints(tmp_path)
    newest = manager.committed()[-1]
    assert verify(newest) is None  # the premise: the commit's own manifest verifies
    damage, reason = BAD_MANIFESTS[variant]
    damage(newest)

    assert reason in verify(newest)
    warnings: list[str] = []
    target = resume_target("auto", manager, warnings.append)

    assert target == tmp_path / "checkpoints" / "step-00000010"
    [warning] = warnings
    assert "step-00000020 is damaged" in warning and reason in warning and "resuming from step-00000010" in warning
    assert (tmp_path / "checkpoints" / "damaged" / "step-00000020").is_dir()  # moved aside, never deleted
    assert [p.name for p in manager.committed()] == ["step-00000010"]


def test_a_manifest_of_another_step_does_not_vouch_for_this_folder(tmp_path):
    manager = _two_checkpoints(tmp_path)
    older, newest = manager.committed()
    (newest / "manifest.json").write_bytes((older / "manifest.json").read_bytes())
    assert verify(newest) == "manifest.json: step 10, but the folder is step-00000020"


def test_an_emptied_manifest_over_flipped_bytes_is_not_loaded_and_the_run_completes(train_config, tmp_path):
    """The reproduction: `{}` as the manifest of the newest checkpoint, 16 flipped bytes in its state, `--resume`."""
    config = train_config(train={"max_steps": 20}, checkpoint={"every": 10, "keep_last": 3})
    check(run_train(config, nproc=1, launcher="single"))
    ckpts = tmp_path / "run" / "checkpoints"
    newest = ckpts / "step-00000020"
    (newest / "manifest.json").write_text("{}\n")
    state = newest / "state" / "__0_0.distcp"
    data = bytearray(state.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 16])
    state.write_bytes(bytes(data))

    result = run_train(config, "train.max_steps=30", nproc=1, launcher="single")

    check(result)
    assert "checkpoint step-00000020 is damaged (manifest.json: no step, world_size, files)" in result.stderr
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r.get("event") == "resume"] == [10]
    assert (ckpts / "damaged" / "step-00000020" / "state" / "__0_0.distcp").read_bytes() == bytes(data)
    assert [r["step"] for r in records if r["kind"] == "train"][-1] == 30
    assert verify(ckpts / "step-00000030") is None
