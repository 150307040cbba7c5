"""`python -m yolotr.engine.rank_agent NPROC TRAIN_ARGS...`: torchrun's agent on this machine, started by
engine/rank_launch.py, running `yolotr train TRAIN_ARGS` in NPROC ranks.

torchrun's own command would answer a rank's failure with a traceback and a failure table of its own; the ranks
have said why already (one line each, and the run folder's exit.json), so here the agent's report is dropped and
a failure is exit code 1, the real code being in the status file (checkpoint/run_status.py).
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    nproc, *train_args = argv
    # Its warnings and errors repeat what the ranks said ("failed (exitcode: 2) local_rank: 0 ..."); a signal passed
    # on to the ranks is logged by the ranks too.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={int(nproc)}", "-m", "yolotr", "train", *train_args]))
    except (ChildFailedError, SignalException):  # a failed rank, or a notice passed on to the ranks
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
