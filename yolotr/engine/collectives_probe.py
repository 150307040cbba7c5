"""`debug.count_collectives`: counts the collectives one training step issues, next to a bare DDP step.

The guard promises no collective of its own under DDP; this makes the promise checkable on real processes. The
profiler records every gloo/NCCL operation (DDP's bucket all-reduces and buffer broadcasts included).
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

from torch.profiler import ProfilerActivity, profile


def _collectives(prof) -> dict[str, int]:
    counts = Counter(e.name for e in prof.events() if e.name.startswith(("gloo:", "nccl:")))
    return dict(sorted(counts.items()))


@contextmanager
def count_collectives(into: dict):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        yield
    into.update(_collectives(prof))


def bare_ddp_step(trainer, batch) -> dict[str, int]:
    """Forward, loss and backward through the same DDP module with no guard at all; gradients are then dropped."""
    counts: dict[str, int] = {}
    images = batch.images.to(trainer.device).float().div_(255)
    targets = batch.targets.to(trainer.device)
    with count_collectives(counts):
        with trainer.autocast:
            preds = trainer.ddp(images)
        loss, _ = trainer.compute_loss(preds, targets)
        loss = trainer.wrapper.tie(loss)
        loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.wrapper.consensus.grad = None
    return counts


def count_guarded_step(trainer, batches) -> None:
    """Counts one guarded step's collectives and a bare DDP step's, and logs both as a `collectives` event."""
    guarded: dict = {}
    with count_collectives(guarded):
        pending = trainer.train_step(batches)
        trainer.step += 1  # as the loop does, before the inspection acts on the step
        trainer.applied_steps += 1
        trainer.handle(trainer.monitor.inspect([pending]))  # the host-side inspection is part of the step too
    trainer.log_window = []
    bare = bare_ddp_step(trainer, trainer.first_batch)
    trainer.io.event(event="collectives", step=trainer.step, guarded_step=guarded, bare_ddp_step=bare)
