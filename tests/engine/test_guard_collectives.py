"""Under DDP the guard needs no collective of its own, and its reported norm is the norm of the averaged gradients."""

import pytest
import torch

from tests.engine.conftest import check, read_jsonl, run_train

pytestmark = pytest.mark.slow


def test_guarded_ddp_step_issues_exactly_the_collectives_of_a_bare_ddp_step(train_config, tmp_path):
    config = train_config(train={"max_steps": 4}, debug={"count_collectives": True})
    check(run_train(config))
    events = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "collectives"]
    assert len(events) == 1
    guarded, bare = events[0]["guarded_step"], events[0]["bare_ddp_step"]
    assert sum(bare.values()) > 0, "the profiler saw no DDP all-reduce: the count would prove nothing"
    assert guarded == bare


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"], ids=["ddp", "deepspeed-zero2"])
def test_reported_grad_norm_equals_the_norm_of_hand_averaged_gradients(train_config, tmp_path, launcher):
    """Recompute step 1 by hand: both ranks' batches, fp32 loss on the bf16-autocast forward, gradients averaged
    as DDP does, one global norm in per-image units (divided by the 8 images of the step, guard/step.py) — and
    compare with what the 2-rank run reported."""
    from yolotr.config import load_config

    config = train_config(train={"max_steps": 1}, checkpoint={"resume": "none"})
    check(run_train(config, launcher=launcher))
    reported = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"][0]["grad_norm"]

    # The ranks ran with one thread each; bf16 CPU kernels round differently with another thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        by_hand = _norm_by_hand(load_config(config))
    finally:
        torch.set_num_threads(threads)
    assert reported == pytest.approx(by_hand, rel=1e-5)


def _norm_by_hand(cfg) -> float:
    from yolotr.data.spec import load_data_yaml
    from yolotr.data.stream import TrainStream
    from yolotr.model.loss import ComputeLoss
    from yolotr.model.yolo import DetectionModel

    data = load_data_yaml(cfg.data)
    torch.manual_seed(cfg.run.seed)
    model = DetectionModel(cfg.model, nc=data.nc, transformer=cfg.transformer.as_yaml())
    model.train()
    global_batch = 8
    grads = []
    for rank in range(2):
        stream = TrainStream(data.train, global_batch_size=global_batch, rank=rank, world_size=2, seed=cfg.run.seed,
                             imgsz=cfg.train.imgsz, augment=cfg.augment, num_workers=0)
        batch = next(iter(stream))
        replica = DetectionModel(cfg.model, nc=data.nc, transformer=cfg.transformer.as_yaml())
        replica.load_state_dict(model.state_dict())
        replica.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            preds = replica(batch.images.float() / 255)
        loss, _ = ComputeLoss(replica, cfg.loss, imgsz=cfg.train.imgsz)(preds, batch.targets)
        (loss * 2).backward()
        grads.append([p.grad.double() for p in replica.parameters()])
    averaged = [(g0 + g1) / 2 for g0, g1 in zip(*grads)]
    summed_loss_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in averaged])).item()
    return summed_loss_norm / global_batch
