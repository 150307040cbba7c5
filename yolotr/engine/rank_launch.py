"""Several ranks started by `yolotr train` itself (`device=0,1`, `nproc=2`), as ultralytics does: a torchrun child
runs `yolotr train` once per rank, on this machine, with the same settings.

The ranks write to this process's stdout and stderr, so their lines stream as they come. torchrun turns any failed
rank into its own exit code 1; the real code, and the run folder, come back through the status file every launch
script uses (`YOLOTR_STATUS_FILE`, checkpoint/run_status.py), and the reason from the run's exit.json. A SIGTERM or
SIGUSR1 sent to this process is passed to torchrun, which passes it to the ranks: they checkpoint and exit 75, as
under any launcher.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from yolotr.checkpoint.run_status import STATUS_ENV
from yolotr.engine.device_choice import visible_devices

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


@dataclass(frozen=True)
class LaunchResult:
    code: int
    """The trainer's exit code (errors.py); the launcher's own when no rank recorded one (a crash)."""
    run_dir: Path | None
    """The run folder the ranks settled on, once they got that far."""
    reason: str | None
    """Why the run stopped, from its exit.json, when it did not finish."""


def under_a_launcher(environ=os.environ) -> bool:
    return "LOCAL_RANK" in environ or int(environ.get("WORLD_SIZE", "1")) > 1


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """The child's command line: torchrun's agent on this machine (a free port of its own, engine/rank_agent.py),
    `yolotr train` per rank."""
    return [sys.executable, "-m", "yolotr.engine.rank_agent", str(nproc), *train_args]


def launch_ranks(nproc: int, train_args: list[str], *, gpus: tuple[int, ...] | None = None) -> LaunchResult:
    """Runs `yolotr train TRAIN_ARGS` in `nproc` ranks and waits for them. `gpus`: the devices the ranks may see
    (rank i takes the i-th); None leaves CUDA_VISIBLE_DEVICES as it is; empty: the CPU."""
    env = dict(os.environ)
    # torchrun's agent passes only these signals on to the ranks; any other would end the agent, and the ranks with it.
    env.setdefault("PET_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(gpus, env)
    with tempfile.TemporaryDirectory(prefix="yolotr-ranks-") as folder:
        status_file = Path(folder) / "status.json"
        env[STATUS_ENV] = str(status_file)
        child = subprocess.Popen(torchrun_command(nproc, train_args), env=env)
        forward = threading.current_thread() is threading.main_thread()  # where Python lets a handler be set
        previous = {sig: signal.signal(sig, lambda number, _: child.send_signal(number))
                    for sig in FORWARDED_SIGNALS if forward}
        try:
            launcher_code = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            status = {}
    code = status.get("exit_code")
    run_dir = Path(status["run_dir"]) if status.get("run_dir") else None
    code = launcher_code if not isinstance(code, int) else code
    return LaunchResult(code=code, run_dir=run_dir, reason=None if code == 0 else _reason(run_dir))


def _reason(run_dir: Path | None) -> str | None:
    if run_dir is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        return json.loads((run_dir / "exit.json").read_text()).get("reason")
    return None
