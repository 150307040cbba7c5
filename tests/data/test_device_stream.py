"""train.augment_on: device: the workers plan, the training process decodes and renders. The stream must deliver the
same samples and exactly the same targets as the CPU path, pixels close to its, and count what fails on the device
as the workers count what fails in them. Run with the CPU as the device (the GPU rows: tests/data/test_device_*)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.data.test_corrupt_data import overwrite_member
from tests.engine.conftest import check, read_jsonl, run_train, tiny_data, tiny_model, write_train_config  # noqa: F401
from yolotr.config.augment import AugmentConfig
from yolotr.data.stream import TrainStream

CPU = torch.device("cpu")


def make_stream(split, augment, *, render_device=None, num_workers=0, max_error_fraction=0.5):
    return TrainStream(split, global_batch_size=8, rank=0, world_size=1, seed=3, imgsz=64, augment=augment,
                       num_workers=num_workers, max_error_fraction=max_error_fraction, render_device=render_device)


# Measured at 64 px (mean |diff| in levels, share of pixels off by more than 8): 0.005 and 0.00001 without rotation
# (interpolation rounding), 0.24–0.31 and 0.4–0.5 % with 5° (the rotated tiles' edges, where fillConvexPoly's fixed
# point is approximated: tests/data/test_device_augment.py). A wrong matrix, tile or colour moves the mean by tens.
@pytest.mark.parametrize(("degrees", "max_mean", "max_far"), [(0.0, 0.02, 1e-4), (5.0, 1.0, 0.02)])
@pytest.mark.parametrize("partners", ["batch", "dataset"])
def test_the_device_path_delivers_the_cpu_paths_samples_and_targets(synth_split, partners, degrees, max_mean,
                                                                    max_far):
    split = synth_split(24, samples_per_shard=8, imgsz=80)
    augment = AugmentConfig(mosaic_partners=partners, degrees=degrees)

    on_cpu = list(make_stream(split, augment))
    on_device = list(make_stream(split, augment, render_device=CPU, num_workers=1))  # plans cross a process

    assert len(on_cpu) == len(on_device) == 3
    diffs = []
    for cpu, device in zip(on_cpu, on_device):
        assert device.keys == cpu.keys and device.plans is None
        assert torch.equal(device.targets, cpu.targets)  # the boxes are the plans': identical, not close
        assert device.images.dtype == torch.uint8 and device.images.shape == cpu.images.shape == (8, 3, 64, 64)
        assert device.images.is_contiguous(memory_format=torch.channels_last)
        diffs.append((device.images.int() - cpu.images.int()).abs().float().flatten())
    diff = torch.cat(diffs)
    assert diff.mean() < max_mean and (diff > 8).float().mean() < max_far


def test_an_image_that_fails_on_the_device_is_skipped_and_counted_with_its_key(synth_split, caplog):
    split = synth_split(16, samples_per_shard=8)
    bad = split.keys[3]
    overwrite_member(split, bad, "jpg", b"this is not a jpeg")
    no_mosaic = AugmentConfig(mosaic=0.0)

    stream = make_stream(split, no_mosaic, render_device=CPU)
    delivered = [key for batch in stream for key in batch.keys]

    assert stream.error_log == [(bad, "invalid_image")]  # as the CPU path reports it (test_corrupt_data.py)
    assert bad not in delivered and len(delivered) == 15
    assert stream.counters()["errors"] == {"invalid_image": 1} and stream.counters()["partner_dropped"] == 0


def test_a_mosaic_whose_partner_fails_is_dropped_and_counted_apart(synth_split):
    split = synth_split(16, samples_per_shard=8)
    bad = split.keys[3]
    overwrite_member(split, bad, "jpg", b"this is not a jpeg")

    stream = make_stream(split, AugmentConfig(mosaic=1.0, mosaic_partners="batch"), render_device=CPU)
    batches = list(stream)
    delivered = [key for batch in batches for key in batch.keys]

    counters = stream.counters()
    assert counters["errors"] == {"invalid_image": 1}  # the failed image itself, once
    # Every other image of its batch drew 3 partners from 7: almost surely some drew it, and none is lost unseen.
    assert counters["partner_dropped"] > 0 and len(delivered) + counters["partner_dropped"] == 15
    for batch in batches:  # the targets follow the images that remain
        assert len(batch.images) == len(batch.keys)
        assert batch.targets[:, 0].max() < len(batch.keys) if len(batch.targets) else True


def test_two_ranks_train_on_the_device_path_on_the_same_samples(tmp_path, tiny_data, tiny_model):  # noqa: F811
    runs = {}
    for where in ("cpu", "device"):
        config = write_train_config(tmp_path, tiny_data, tiny_model, run={"dir": str(tmp_path / where), "seed": 0},
                                    train={"augment_on": where, "max_steps": 4}, debug={"sample_ledger": True})
        result = run_train(config)
        check(result)
        rendered_on_device = "decodes and renders its batches on cpu" in result.stdout + result.stderr
        assert rendered_on_device == (where == "device"), result.stderr[-3000:]
        runs[where] = result
    ledgers = {where: sorted((r["step"], r["rank"], r["key"]) for r in read_jsonl(tmp_path / where / "ledger.jsonl"))
               for where in runs}
    assert ledgers["device"] == ledgers["cpu"] and len(ledgers["cpu"]) == 4 * 8
    losses = [r["loss"] for r in read_jsonl(tmp_path / "device" / "metrics.jsonl") if r.get("kind") == "train"]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)

