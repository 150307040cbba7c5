"""Preemption notices (SIGTERM, SIGUSR1, ...) only set a flag; the ranks agree on it at the next step, where it rides
in the consensus all-reduce, then checkpoint and exit 75.

Installed as soon as `yolotr train` has read its config: a notice during start-up (model build, DeepSpeed set-up, a
resume) would otherwise kill the process with the signal's default action, and Slurm would not requeue the job.
"""

from __future__ import annotations

import signal


class PreemptionFlag:
    def __init__(self) -> None:
        self.requested = False

    def install(self, signal_names: list[str]) -> None:
        for name in signal_names:
            signal.signal(getattr(signal, name), self._request)

    def _request(self, signum, frame) -> None:
        self.requested = True


PREEMPTION = PreemptionFlag()
