"""A real Slurm cluster of N hosts (munged + slurmctld + one slurmd per host) in a temp dir, for tests.

Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge`` packages, run as root with
everything (key, sockets, state, spool, logs, config) under one directory and on free ports, so it
never touches a system Slurm. The daemons run in the foreground as our children and are stopped by
pid, after every job of the cluster has been cancelled and has left.

One host is this machine itself. Several hosts are network + UTS namespaces on this machine, each
with its own address, hostname and ``/etc/hosts``, joined by a bridge that lives in a namespace of its
own; the addresses exist only inside namespaces created here, which are deleted by name at teardown.
Each daemon starts through ``nsenter --net`` (not ``ip netns exec``, which remounts /sys, and slurmd
then dies on the missing cgroup filesystem), and everything a job starts inherits its host's
namespaces. Client commands run on the first host, where slurmctld runs.
"""

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun")
INSTALL_HINT = "apt-get install -y slurmctld slurmd slurm-client munge iproute2"
SUBNET = "10.213.0"  # lives only inside the namespaces below: invisible to this machine's own network
_CLUSTERS = itertools.count()  # clusters started by this process
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "PREEMPTED"}


def missing_requirements(hosts: int = 1) -> str | None:
    """Why a cluster of ``hosts`` hosts cannot be started here, or None when it can."""
    tools = DAEMONS + (("ip", "nsenter", "unshare") if hosts > 1 else ())
    missing = [name for name in tools if not shutil.which(name) and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"Slurm/munge not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "the Slurm test cluster runs its daemons as root; run the tests as root (as .ci/run does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


class SlurmCluster:
    def __init__(self, root: Path, hosts: int = 1, cpus: int = 2, slurmd_timeout: int = 300) -> None:
        self.root = root
        self.cpus = cpus  # per host
        self.slurmd_timeout = slurmd_timeout  # how soon slurmctld declares a silent host down
        self.conf = root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        # Namespaced hosts get names unique to this cluster of this process, so that the clusters of one
        # test run, of two test runs, or a crashed run's leftovers never collide; deleting them by these
        # names cannot touch others.
        tag = f"rt{os.getpid() % 100000}c{next(_CLUSTERS)}"
        self.name = f"{tag}h{hosts}"  # ClusterName: two test clusters never share job ids under one name
        self.netns = hosts > 1
        if self.netns:
            self.hosts = [f"{tag}n{i}" for i in range(1, hosts + 1)]
            self.addr = {h: f"{SUBNET}.{i}" for i, h in enumerate(self.hosts, 1)}
            self.namespaces = [*self.hosts, f"{tag}br"]  # the hosts', then the bridge's
        else:
            self.hosts = [socket.gethostname().split(".")[0]]
            self.addr = {self.hosts[0]: "127.0.0.1"}
            self.namespaces = []
        # A test run inside a real job must not talk to (or look like) that job.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        self.env["SLURM_CONF"] = str(self.conf)

    @property
    def node(self) -> str:
        return self.hosts[0]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "SlurmCluster":
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> "SlurmCluster":
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.netns:
            self._make_network()
        key, sock = self.root / "munge" / "munge.key", self.root / "munge" / "munge.socket"
        subprocess.run([_which("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True, timeout=30)
        # One munged for all hosts: its socket is a file, reachable from every network namespace.
        self._spawn(
            "munged",
            [_which("munged"), "-F", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={self.root / 'munge' / 'munged.pid'}", f"--seed-file={self.root / 'munge' / 'seed'}",
             f"--log-file={self.root / 'log' / 'munged.log'}"],
        )  # fmt: skip
        self._wait_for(sock.exists, timeout, "munged socket")
        self.conf.write_text(self._slurm_conf(sock))
        self._spawn("slurmctld", self._on(self.node, [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)]))
        self._wait_for(lambda: "UP" in self.run("scontrol", "ping", check=False).stdout, timeout, "slurmctld")
        for host in self.hosts:
            self.start_host(host, timeout)
        return self

    def start_host(self, host: str, timeout: float = 60) -> None:
        """Start (or restart, after :meth:`crash_host`) the slurmd of ``host`` and wait until it is up."""
        if self.netns:
            _sh("ip", "-n", host, "link", "set", "eth0", "up")
        self._spawn(f"slurmd-{host}", self._on(host, [_which("slurmd"), "-D", "-f", str(self.conf), "-N", host]))
        self._wait_for(lambda: self.node_state(host) in ("idle", "mixed", "allocated"), timeout, f"node {host} up")

    def crash_host(self, host: str) -> list[int]:
        """What a host crash does: it drops off the network, then its slurmd and everything a job runs there
        die at once (SIGKILL). Peers see no connection close, as with a real crash: only silence.

        Only for namespaced hosts, whose processes are exactly those in the host's network namespace.
        Returns the pids killed besides slurmd's.
        """
        assert self.netns, "crash_host needs namespaced hosts (hosts > 1)"
        _sh("ip", "-n", host, "link", "set", "eth0", "down")
        daemon = self.procs.pop(f"slurmd-{host}")
        daemon.kill()
        daemon.wait(timeout=15)
        pids = [int(p) for p in self._ip("netns", "pids", host).split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        """Cancel all jobs, wait until they are gone, stop the daemons we started (by pid), then kill
        whatever is left in our namespaces and delete them (by name)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", "root", check=False)
            with contextlib.suppress(TimeoutError, subprocess.TimeoutExpired):  # still stop the daemons below
                self._wait_for(lambda: not self.run("squeue", "-h", check=False).stdout.strip(), 30, "jobs to end")
        for name in [n for n in self.procs if n.startswith("slurmd")] + ["slurmctld", "munged"]:
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        for ns in self.namespaces:
            if not Path("/run/netns", ns).exists():
                continue
            with contextlib.suppress(subprocess.CalledProcessError):
                for pid in self._ip("netns", "pids", ns).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(subprocess.CalledProcessError):
                _sh("ip", "netns", "delete", ns)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a Slurm client command (sbatch, squeue, scontrol, ...) against this cluster, on its first host."""
        kw.setdefault("env", self.env)
        return subprocess.run(self.client(*cmd), check=check, capture_output=True, text=True, timeout=timeout, **kw)

    def client(self, *cmd: str) -> list[str]:
        """``cmd`` as a command line that runs on the first host (to hand to subprocess yourself)."""
        return ["nsenter", f"--net=/run/netns/{self.node}", *cmd] if self.netns else list(cmd)

    def job_state(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, RestartCount, ExitCode, ...)."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def node_state(self, host: str) -> str:
        return self.run("sinfo", "-h", "-n", host, "-o", "%T", check=False).stdout.strip()

    def wait_job(self, job_id: str, timeout: float, until: tuple[str, ...] = ("COMPLETED",)) -> dict[str, str]:
        """Poll until the job reaches one of ``until`` or a terminal state; return its last state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if not state:
                raise RuntimeError(f"slurmctld does not know job {job_id} (purged, or never submitted)\n{self.logs()}")
            if state.get("JobState") in set(until) | TERMINAL:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {until} after {timeout}s: {self.job_state(job_id)}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((self.root / "log").glob("*.log")))

    # -- internals -------------------------------------------------------------------------
    def _ip(self, *args: str) -> str:
        return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout

    def _make_network(self) -> None:
        """One namespace per host, each with a veth into a bridge in a namespace of its own."""
        bridge_ns = self.namespaces[-1]
        hosts_file = self.root / "hosts"
        lines = ["127.0.0.1 localhost", *(f"{a} {h}" for h, a in self.addr.items())]
        hosts_file.write_text("\n".join(lines) + "\n")
        _sh("ip", "netns", "add", bridge_ns)
        _sh("ip", "-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", bridge_ns, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts, 1):
            _sh("ip", "netns", "add", host)
            # Created straight inside the two namespaces: nothing appears in this machine's own.
            _sh("ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", bridge_ns)
            _sh("ip", "-n", host, "addr", "add", f"{self.addr[host]}/24", "dev", "eth0")
            _sh("ip", "-n", host, "link", "set", "eth0", "up")
            _sh("ip", "-n", host, "link", "set", "lo", "up")
            _sh("ip", "-n", bridge_ns, "link", "set", f"p{i}", "master", "br0", "up")

    def _on(self, host: str, cmd: list[str]) -> list[str]:
        """``cmd`` run as ``host``: its network namespace, its hostname and its /etc/hosts."""
        if not self.netns:
            return cmd
        inner = f'mount --bind {self.root / "hosts"} /etc/hosts && hostname {host} && exec "$@"'
        return ["nsenter", f"--net=/run/netns/{host}", "unshare", "--uts", "--mount", "sh", "-c", inner, "sh", *cmd]

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout.log", "a")  # noqa: SIM115 (lives as long as the daemon)
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()

    def _wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
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
        nodes = "\n".join(f"NodeName={h} NodeAddr={a} CPUs={self.cpus} State=UNKNOWN" for h, a in self.addr.items())
        # cred_expire is also how long Slurm holds a requeued job (reason BeginTime; default 120 s).
        # MinJobAge: finished jobs stay visible to scontrol for the whole test session.
        return f"""\
ClusterName={self.name}
SlurmctldHost={self.node}({self.addr[self.node]})
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout={self.slurmd_timeout}
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
KillWait=30
MinJobAge=86400
InactiveLimit=0
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
