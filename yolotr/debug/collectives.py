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
