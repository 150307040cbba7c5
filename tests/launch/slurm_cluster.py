"""A real Slurm cluster on this machine, started and stopped by the tests: munged, slurmctld and one slurmd per
emulated node, all in the foreground as child processes of the test run, so that each is ended by its pid.

Several nodes on one machine: Debian's Slurm is built with multiple-slurmd support, so `slurmd -N n1` and
`slurmd -N n2` run side by side on distinct ports, both at 127.0.0.1. Nothing is written outside the given folder
except munged's socket folder (munged insists on one it owns, which /tmp's pytest folders are not).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo")


def unavailable_reason() -> str | None:
    """Why a Slurm cluster cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "the Slurm tests start slurmctld/slurmd/munged and need root"
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}): run `bash launch/ci_prereqs.sh` as root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user: the munge package is not installed properly"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class SlurmCluster:
    folder: Path
    nodes: tuple[str, ...]
    env: dict[str, str]
    """Environment for Slurm clients (sbatch, scontrol...): SLURM_CONF points at this cluster."""
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)
    munge_dir: Path | None = None
    submitted: list[int] = field(default_factory=list)

    # ------------------------------------------------------------------ clients
    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}: {result.stderr}\n{self.logs()}")
        return result

    def sbatch(self, script: Path, *args: str, options: tuple[str, ...] = (), env: dict | None = None,
               cwd: Path | None = None) -> int:
        """Submits `script` with `args` from `cwd` (the submit directory); returns the job id."""
        result = subprocess.run(["sbatch", "--parsable", *options, str(script), *args], env={**self.env, **(env or {})},
                                cwd=cwd, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise AssertionError(f"sbatch {script.name} failed ({result.returncode}): {result.stderr}")
        job_id = int(result.stdout.strip().split(";")[0])
        self.submitted.append(job_id)
        return job_id

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, NodeList, ...)."""
        out = self.run("scontrol", "show", "job", "--oneliner", str(job_id)).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def wait_for_job(self, job_id: int, states: tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                     "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"), timeout: float = 300,
                     describe=lambda: "") -> dict[str, str]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not in {states} after {timeout}s: {self.job(job_id)}\n{describe()}\n{self.logs()}")

    def logs(self, lines: int = 30) -> str:
        parts = []
        for path in sorted((self.folder / "log").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Cancels every job this cluster ran, waits for their processes to end, then ends each daemon by its pid."""
        if self.submitted and self.daemons.get("slurmctld") and self.daemons["slurmctld"].poll() is None:
            self.run("scancel", *map(str, self.submitted), check=False)
            deadline = time.time() + 30
            while time.time() < deadline and self.run("squeue", "--noheader", check=False).stdout.strip():
                time.sleep(0.5)
        for pid in _stepd_pids(self.submitted):  # slurmstepd detaches from slurmd: find ours by job id
            _kill(pid)
        for name in reversed(list(self.daemons)):
            proc = self.daemons[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)


def start_cluster(folder: Path, nodes: tuple[str, ...] = ("n1", "n2"), cpus_per_node: int = 2) -> SlurmCluster:
    """Starts munged, slurmctld and one slurmd per node; returns once every node is idle."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "log", *(f"spool/{n}" for n in nodes)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    cluster = SlurmCluster(folder=folder, nodes=nodes, env={})
    try:
        socket_path = _start_munged(cluster)
        conf = folder / "slurm.conf"
        conf.write_text(_slurm_conf(folder, nodes, cpus_per_node, socket_path))
        cluster.env = {**os.environ, "SLURM_CONF": str(conf)}
        log = open(folder / "log" / "slurmctld.stdout.log", "w")
        # -i: ignore stale state; -c: cold start (no jobs from an earlier run of the tests).
        cluster.daemons["slurmctld"] = subprocess.Popen([_binary("slurmctld"), "-D", "-c", "-i", "-f", str(conf)],
                                                        env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
        _wait_until(lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, 30, "slurmctld to answer",
                    cluster)
        for node in nodes:
            log = open(folder / "log" / f"slurmd-{node}.stdout.log", "w")
            cluster.daemons[f"slurmd-{node}"] = subprocess.Popen(
                [_binary("slurmd"), "-D", "-N", node, "-f", str(conf)], env=cluster.env, stdout=log,
                stderr=subprocess.STDOUT)

        def all_idle() -> bool:
            states = cluster.run("sinfo", "--noheader", "--Node", "--format=%N %t", check=False).stdout.split("\n")
            idle = {line.split()[0] for line in states if line.strip() and line.split()[1] == "idle"}
            return idle == set(nodes)

        _wait_until(all_idle, 60, "every node to be idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_munged(cluster: SlurmCluster) -> Path:
    """A private munged with its own key: munged refuses root, so it runs as the `munge` user, in a folder it owns."""
    munge = pwd.getpwnam("munge")
    base = "/run" if os.access("/run", os.W_OK) else None
    cluster.munge_dir = Path(tempfile.mkdtemp(prefix="yolotr-test-munge-", dir=base))
    os.chmod(cluster.munge_dir, 0o755)
    os.chown(cluster.munge_dir, munge.pw_uid, munge.pw_gid)
    key = cluster.munge_dir / "munge.key"
    subprocess.run([_binary("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True,
                   user=munge.pw_uid, group=munge.pw_gid)
    socket_path = cluster.munge_dir / "munge.socket"
    cluster.daemons["munged"] = subprocess.Popen(
        [_binary("munged"), "--foreground", f"--socket={socket_path}", f"--key-file={key}",
         f"--pid-file={cluster.munge_dir / 'munged.pid'}", f"--seed-file={cluster.munge_dir / 'munged.seed'}",
         f"--log-file={cluster.folder / 'log' / 'munged.log'}"],
        user=munge.pw_uid, group=munge.pw_gid, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    (cluster.folder / "log" / "munged.log").touch()
    os.chown(cluster.folder / "log" / "munged.log", munge.pw_uid, munge.pw_gid)
    _wait_until(socket_path.exists, 20, "munged's socket", cluster)
    return socket_path


def _slurm_conf(folder: Path, nodes: tuple[str, ...], cpus: int, munge_socket: Path) -> str:
    host = socket.gethostname()
    node_lines = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs={cpus} State=UNKNOWN"
        for n in nodes
    )
    return f"""\
ClusterName=yolotr-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again only after the old credential expired (default 120 s).
AuthInfo=socket={munge_socket},cred_expire=5
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool/%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
MailProg=/bin/true
{node_lines}
PartitionName=debug Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP
"""


def _wait_until(predicate, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        for name, proc in cluster.daemons.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}\n{cluster.logs()}")
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}\n{cluster.logs()}")


def _stepd_pids(job_ids: list[int]) -> list[int]:
    """Pids of slurmstepd processes that still serve one of these jobs ("slurmstepd: [JOB.batch]")."""
    wanted = {str(j) for j in job_ids}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("slurmstepd: [") and cmdline[len("slurmstepd: ["):].split(".")[0].split("]")[0] in wanted:
            pids.append(int(entry.name))
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
