"""The one local runner: CLI runs as child processes, several at once, each with its own log.

- ``run_one`` runs a command in its own process group, logs to a file and kills the whole group when
  its time is up (exit code 124), so a stuck run never outlives its box.
- ``run_many`` runs named chains of ``python -m src.cli`` calls (a chain's calls one after another, the
  chains ``jobs`` at a time); with ``gpus`` a running chain holds one GPU (``CUDA_VISIBLE_DEVICES``)
  until it ends; with ``deadline`` every chain still running then is stopped.
- ``run_local`` is what the experiments and ``scripts/sweep.py`` call: one ``fit`` per name, a line per
  result, an exit naming the failed runs, and the provenance of the batch in its log folder.
"""

import contextlib
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from src import provenance

REPO = Path(__file__).resolve().parents[1]
TIMED_OUT = 124  # as coreutils' timeout(1)


def child_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a child: the repository importable, output unbuffered, W&B offline
    unless the caller chose (a lent GPU machine has no network; W&B still writes its files)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "src.cli", *args]


def run_one(
    cmd: Sequence[str], log: Path, timeout: float | None = None, env: Mapping[str, str] | None = None,
    cwd: Path | None = REPO,
) -> int:  # fmt: skip
    """``cmd`` with stdout and stderr into ``log`` (its first line: the command); its exit code, or 124
    when ``timeout`` seconds passed (the process group is killed)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env or child_env()), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills DataLoader workers too
        )  # fmt: skip
        try:
            return proc.wait(timeout=None if timeout is None else max(1.0, timeout))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # the group may have exited already
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return TIMED_OUT


@dataclass
class Result:
    name: str
    rc: int  # the first non-zero exit code of the chain, or 0
    seconds: float
    gpu: str | None
    logs: list[Path] = field(default_factory=list)  # one per call of the chain that ran

    def output(self, call: int = -1) -> str:
        return self.logs[call].read_text(errors="replace") if self.logs else ""


def run_many(
    chains: Mapping[str, Sequence[Sequence[str]]],
    jobs: int,
    log_dir: Path,
    gpus: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = REPO,
    deadline: float | None = None,
) -> list[Result]:
    """Each named chain of CLI argument lists, ``jobs`` chains at a time; a chain stops at its first failure.
    Logs: ``log_dir/<name>.log`` (``<name>-<i>.log`` for chains of several calls). ``deadline`` is a
    ``time.time()``: calls still running then exit 124. Results in the order of ``chains``."""
    if gpus and jobs > len(gpus):
        raise SystemExit(f"error: {jobs} jobs at once need as many GPUs, not {len(gpus)} ({','.join(gpus)})")
    free: queue.Queue[str | None] = queue.Queue()
    for i in range(jobs):
        free.put(gpus[i] if gpus else None)

    def one(name: str) -> Result:
        gpu = free.get()  # held until this chain ends: no two running chains share a GPU
        try:
            child = dict(env or child_env())
            if gpu is not None:
                child["CUDA_VISIBLE_DEVICES"] = gpu
            result = Result(name, 0, 0.0, gpu)
            start = time.perf_counter()
            calls = chains[name]
            for i, args in enumerate(calls):
                log = log_dir / (f"{name}.log" if len(calls) == 1 else f"{name}-{i}.log")
                result.logs.append(log)
                left = None if deadline is None else deadline - time.time()
                result.rc = run_one(cli(*args), log, left, child, cwd)
                if result.rc:
                    break
            result.seconds = time.perf_counter() - start
            return result
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, chains))


def run_local(
    cmds: dict[str, list[str]], jobs: int, log_dir: Path, gpus: list[str] | None = None, cwd: Path | None = REPO
) -> list[tuple[str, int, str | None]]:
    """``python -m src.cli fit CMD`` per entry, ``jobs`` at a time, each logging to ``log_dir/<name>.log``;
    with ``gpus`` a running job holds one of them until it ends. The batch's provenance goes to
    ``log_dir/provenance.json``. Returns (name, exit code, GPU) per run; exits naming the runs that failed."""
    provenance.write(log_dir)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # Only the thread count is set: a grid's W&B mode is the caller's (its config or WANDB_MODE).
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    chains = {name: [["fit", *cmd]] for name, cmd in cmds.items()}
    results = run_many(chains, jobs, log_dir, gpus, env, cwd)
    for r in results:
        outcome = "ok" if r.rc == 0 else f"FAILED (exit {r.rc}), see {r.logs[0]}"
        print(f"{r.name}: {outcome}{'' if r.gpu is None else f' on GPU {r.gpu}'} in {r.seconds:.0f} s")
    failed = [r.name for r in results if r.rc]
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return [(r.name, r.rc, r.gpu) for r in results]
