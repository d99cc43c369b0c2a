"""A real one-host Slurm cluster (munged + slurmctld + slurmd) in a temp dir, for tests.

Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge`` packages, run as root with
everything (key, sockets, state, spool, logs, config) under one directory and on free ports,
so it never touches a system Slurm. The daemons run in the foreground as our children and
are stopped by pid, after every job of the cluster has been cancelled and has left.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun")
INSTALL_HINT = "apt-get install -y slurmctld slurmd slurm-client munge"


def missing_requirements() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    missing = [name for name in DAEMONS if not shutil.which(name) and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"Slurm/munge not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "the one-host Slurm test cluster runs its daemons as root; run the tests as root (as .ci/run does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2) -> None:
        self.root = root
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        # A test run inside a real job must not talk to (or look like) that job.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        self.env["SLURM_CONF"] = str(self.conf)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "SlurmCluster":
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(mode=0o700, parents=True, exist_ok=True)
        key, sock = self.root / "munge" / "munge.key", self.root / "munge" / "munge.socket"
        subprocess.run([_which("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True, timeout=30)
        self._spawn(
            "munged",
            [_which("munged"), "-F", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={self.root / 'munge' / 'munged.pid'}", f"--seed-file={self.root / 'munge' / 'seed'}",
             f"--log-file={self.root / 'log' / 'munged.log'}"],
        )  # fmt: skip
        self._wait_for(sock.exists, timeout, "munged socket")
        self.conf.write_text(self._slurm_conf(sock))
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for(lambda: "UP" in self.run("scontrol", "ping", check=False).stdout, timeout, "slurmctld")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait_for(self._node_ready, timeout, f"node {self.node} idle")
        return self

    def stop(self) -> None:
        """Cancel all jobs, wait until they are gone, then stop the daemons we started (by pid)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", "root", check=False)
            with contextlib.suppress(TimeoutError):  # still stop the daemons below
                self._wait_for(lambda: not self.run("squeue", "-h", check=False).stdout.strip(), 30, "jobs to end")
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a Slurm client command (sbatch, squeue, scontrol, ...) against this cluster."""
        kw.setdefault("env", self.env)
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout, **kw)

    def job_state(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, RestartCount, ExitCode, ...)."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def wait_job(self, job_id: str, timeout: float, until: tuple[str, ...] = ("COMPLETED",)) -> dict[str, str]:
        """Poll until the job reaches one of ``until`` or a terminal state; return its last state."""
        terminal = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state.get("JobState") in set(until) | terminal:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {until} after {timeout}s: {self.job_state(job_id)}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((self.root / "log").glob("*.log")))

    # -- internals -------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout.log", "w")  # noqa: SIM115 (lives as long as the daemon)
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()

    def _node_ready(self) -> bool:
        state = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False).stdout.strip()
        return state in ("idle", "mixed", "allocated")

    def _wait_for(self, ready, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def _slurm_conf(self, munge_socket: Path) -> str:
        r = self.root
        return f"""\
ClusterName=pytest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
KillWait=5
MinJobAge=600
InactiveLimit=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
