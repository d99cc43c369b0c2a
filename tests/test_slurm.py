"""scripts/slurm on real Slurm clusters (tests/slurm_cluster.py), nothing mocked.

One host: DDP over 2 tasks; a hand-sent SIGUSR1/SIGTERM -> checkpoint -> requeue -> exactly max_steps.
Two hosts (network namespaces): DDP across hosts; real time limits, with the warning signal and without
it (the hard limit's SIGTERM), through requeues alone; a host that crashes mid-run.

The time-limit, host-crash and job-array scenarios spend minutes waiting on Slurm's clock, not on the
CPU: each is a session fixture (tests/conftest.py: ``time_limit_jobs``, ``host_crash``, ``job_array``) that
its checking tests request, started before the first test of the session when a selected test requests it.
Any one test runs alone. A hand-sent signal goes in at a known step (``HoldAtStep``), not against the
clock; the time-limit jobs leave tens of seconds of margin by construction (``TIME_LIMIT_JOBS``).

Skipped, with the reason, where the Slurm/munge daemons are not installed (or not root); with CI=true
(set by .ci/run) that fails instead, so CI cannot pass without running them (tests/conftest.py ``require``).
"""

import csv
import json
import math
import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from src.models.classifier import LRFactor
from tests.fault_injection import write_tiny_config
from tests.slurm_cluster import SlurmCluster
from tests.test_scale import fit as fit_locally
from tests.test_scale import run_config

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "scripts" / "slurm" / "train.sbatch"
pytestmark = pytest.mark.slow


@pytest.fixture
def workdir(tmp_path: Path, cluster: SlurmCluster) -> Path:
    return tmp_path


def job_log(path: Path) -> str:
    return path.read_text() if path.exists() else "<no job log>"


# What Slurm itself prints when it ends a job step (a requeue from inside the step, a time limit).
SLURM_NOTICE = re.compile(
    r"slurmstepd\S*: error: \*\*\* (STEP|JOB) \S+ ON \S+ CANCELLED AT \S+ DUE TO (JOB REQUEUE|TIME LIMIT) \*\*\*"
    r"|srun: (Job step aborted: .*|got SIGCONT|forcing job termination|launch/slurm: _step_signal: Terminating .*)"
)
PREEMPTED = (
    r"Preempted \((SIGUSR1|SIGTERM)\) at global step (\d+), epoch (\d+); checkpoint \S+; requeued SLURM job {job}"
)


def segments(log: str, job_id: str) -> list[list[str]]:
    """The job log split at each (re)start's first line: one list of lines per segment."""
    parts: list[list[str]] = []
    for line in log.splitlines():
        if line.startswith(f"job {job_id} restart "):
            parts.append([])
        if parts:
            parts[-1].append(line)
    return parts


def assert_clean_segments(log: str, job_id: str, restarts: int | None = None) -> list[tuple[str, int, int]]:
    """Every preempted segment ends with the line that says so (signal, step, requeue), and nothing in the
    log looks like a crash; returns (signal, step, epoch) per preempted segment."""
    for crash in ("Traceback", "srun: error", "exit code", "Killed", "killed by signal"):
        assert crash not in log, f"{crash!r} in the job log:\n{log}"
    parts = segments(log, job_id)
    assert restarts is None or len(parts) == restarts + 1, log
    found = []
    for lines in parts[:-1]:
        ours = [i for i, line in enumerate(lines) if re.fullmatch(PREEMPTED.format(job=job_id) + ".*", line)]
        assert ours, "\n".join(lines)
        m = re.match(PREEMPTED.format(job=job_id), lines[ours[-1]])
        assert m is not None
        after = lines[ours[-1] + 1 :]
        # After SIGUSR1 the template requeues once the step has ended: our line is the last. After a
        # SIGTERM rank 0 requeues from inside the step, and Slurm may add its own notices after ours.
        assert not after if m[1] == "SIGUSR1" else all(SLURM_NOTICE.fullmatch(a) for a in after), "\n".join(lines)
        found.append((m[1], int(m[2]), int(m[3])))
    return found


def lr_by_step(run_dir: Path) -> dict[int, list[float]]:
    """``lr-SGD`` per global step over every restart's ``version_<n>/metrics.csv``."""
    out: dict[int, list[float]] = {}
    for metrics in sorted(run_dir.glob("version_*/metrics.csv")):
        with open(metrics) as f:
            for row in csv.DictReader(f):
                if row.get("lr-SGD"):
                    out.setdefault(int(row["step"]), []).append(float(row["lr-SGD"]))
    return out


def test_sbatch_template_runs_ddp_over_two_tasks(cluster: SlurmCluster, workdir: Path) -> None:
    config = write_tiny_config(workdir / "tiny.yaml", max_steps=12)
    submit = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "slurm" / "submit.py"), str(config), "--gpus-per-node", "0",
         "--ntasks-per-node", "2", "--cpus-per-task", "1", "--time", "10:00", "--log-dir", "logs"],
        cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    job_id = submit.stdout.split()[0]
    state = cluster.wait_job(job_id, timeout=240)
    log = job_log(workdir / "logs" / f"tiny-{job_id}.out")
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"

    # Both ranks joined one gloo process group, and the run landed in the job's run directory.
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log, log
    assert "Starting with 2 processes" in log, log
    run_dir = workdir / "runs" / "tiny" / f"slurm-{job_id}"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 12
    assert (run_dir / "version_0" / "config.yaml").exists()
    assert set(lr_by_step(run_dir)) == set(range(12))  # rank 0 logged every step


def hold_at(step: int, held: Path, release: Path | str = "") -> str:
    """``--trainer.callbacks+=`` for tests.ddp_helpers.HoldAtStep: the run waits after ``step`` for a signal
    (or ``release``), so that the test signals it at that step whatever the machine's speed."""
    args = {"step": step, "held": str(held), "release": str(release)}
    return "--trainer.callbacks+=" + json.dumps({"class_path": "tests.ddp_helpers.HoldAtStep", "init_args": args})


def wait_for(path: Path, cluster: SlurmCluster, job_id: str, log: Path, timeout: float = 300) -> None:
    """Until ``path`` exists; fails at once if the job has ended, and after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        state = cluster.job_state(job_id)
        assert time.monotonic() < deadline, f"no {path} after {timeout} s: {state}\n{job_log(log)}"
        assert state.get("JobState") in ("PENDING", "RUNNING"), f"{state}\n{job_log(log)}"
        time.sleep(0.2)


# SIGTERM inside SLURM: the hard time limit below; outside SLURM: tests/test_fault_tolerance.py.
@pytest.mark.parametrize("signal_name", ["USR1"])
def test_preemption_checkpoints_requeues_and_resumes_to_max_steps(
    cluster: SlurmCluster, workdir: Path, signal_name: str
) -> None:
    max_steps, at = 24, 6  # 4 steps per epoch per rank: signalled mid-epoch 1
    config = write_tiny_config(workdir / "tiny.yaml", max_steps=max_steps, widths="[8, 16]", image_size=16)
    (workdir / "logs").mkdir()
    submit = cluster.run(
        "sbatch", "--parsable", "--job-name=preempt", "--output=logs/%x-%j.out", "--gres=none", "--nodes=1",
        "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10:00", str(TEMPLATE), "-c", str(config),
        hold_at(at, workdir / "held"), cwd=workdir,
    )  # fmt: skip
    job_id = submit.stdout.strip()
    log_path = workdir / "logs" / f"preempt-{job_id}.out"
    ckpt_dir = workdir / "runs" / "tiny" / f"slurm-{job_id}" / "checkpoints"

    # Once the training holds after step `at`: send what `--signal=SIGUSR1@90` sends before the time
    # limit, or the SIGTERM of a hard limit or an eviction (to the job's srun tasks, not to the batch shell).
    wait_for(workdir / "held", cluster, job_id, log_path)
    cluster.run("scancel", f"--signal={signal_name}", job_id)

    # Slurm holds the requeued job for cred_expire (10 s on the test cluster; reason BeginTime). Forcing
    # StartTime=now instead starts it while its old credential is still revoked, and it fails.
    state = cluster.wait_job(job_id, timeout=300)
    log = job_log(log_path)
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"
    assert state["Restarts"] == "1", f"the job was not requeued once: {state}\n{log}"

    preempted = re.search(rf"Received SIG{signal_name} at global step (\d+), epoch (\d+)", log)
    resumed = re.search(r"Resumed training at global step (\d+), epoch (\d+)", log)
    assert preempted and resumed, log
    print(f"preempted at step {preempted[1]} (epoch {preempted[2]}); resumed at step {resumed[1]} (epoch {resumed[2]})")
    # Acted on at the step it came in (HoldAtStep runs before Preemption), mid-epoch: the same epoch resumes.
    assert (int(preempted[1]), int(preempted[2])) == (at, 1), log
    assert (int(resumed[1]), int(resumed[2])) == (at, 1), log
    assert f"requeued SLURM job {job_id}" in log and f"job {job_id} restart 1" in log, log

    last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == max_steps
    print(f"final step {last['global_step']}")

    # The LR schedule went on from the restored scheduler state: every step 0..max_steps-1 logged once,
    # at the cosine schedule's value for that step (a fresh scheduler would restart at the base lr).
    factor = LRFactor(schedule="cosine", total_steps=max_steps)
    lrs = lr_by_step(ckpt_dir.parent)
    assert sorted(lrs) == list(range(max_steps))
    for k, values in lrs.items():
        assert len(values) == 1 and math.isclose(values[0], 0.05 * factor(k), rel_tol=1e-6), (k, values)
    assert len(list(ckpt_dir.parent.glob("version_*"))) == 2  # one log directory per segment
    assert_clean_segments(log, job_id, restarts=1)


def slow_tiny_job(cluster: SlurmCluster, workdir: Path, name: str, max_steps: int, seconds: float, *sbatch: str) -> str:
    """``train.sbatch`` on 2 hosts x 1 task, a tiny net whose steps take ``seconds`` each: minutes of training."""
    config = write_tiny_config(workdir / f"{name}.yaml", max_steps=max_steps)
    slow = json.dumps({"class_path": "tests.fault_injection.SlowSteps", "init_args": {"seconds": seconds}})
    (workdir / "logs").mkdir(exist_ok=True)
    submit = cluster.run(
        "sbatch", "--parsable", f"--job-name={name}", "--output=logs/%x-%j.out", "--gres=none", "--nodes=2",
        "--ntasks-per-node=1", "--cpus-per-task=1", *sbatch, str(TEMPLATE), "-c", str(config), f"--name={name}",
        f"--trainer.callbacks+={slow}", cwd=workdir,
    )  # fmt: skip
    return submit.stdout.strip()


# slurmctld checks time limits every 30 s: `--signal=USR1@60` comes 60 to 90 s before a limit of 2 minutes
# (30 to 60 s into the segment: the training has started, or its start holds the signal), and the limit's
# SIGTERM 90 s after it. So every segment but the last ends on USR1, after at most 60 / 2.5 = 24 steps of
# 2.5 s: 60 steps take >= 3 segments. The other job has no usable warning (SIGURG, ignored by Python, as when
# USR1 is missed): only the hard limit's SIGTERM ends its segments, after < 150 steps of 1 s.
TIME_LIMIT_JOBS = {"warned": ("--time=2", "--signal=USR1@60"), "hard": ("--time=2", "--signal=URG@1")}
TIME_LIMIT_STEPS = {"warned": 60, "hard": 150}
STEP_SECONDS = {"warned": 2.5, "hard": 1.0}
JOB_WAIT_S = 1500


class Scenario:
    """A scenario run in a thread while other tests run; its assertions fail there, and :meth:`result`
    re-raises the failure in the test that checks it."""

    def __init__(self, scenario: Callable[..., str], *args: object) -> None:
        self.name = scenario.__name__
        self.outcome: str | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, args=(scenario, *args), name=self.name, daemon=True)
        self.thread.start()

    def _run(self, scenario: Callable[..., str], *args: object) -> None:
        try:
            self.outcome = scenario(*args)
        except BaseException:
            self.error = traceback.format_exc()

    def result(self, timeout: float = 900) -> str:
        self.thread.join(timeout)
        if self.thread.is_alive():
            pytest.fail(f"{self.name} still running after {timeout} s more")
        if self.error is not None:
            pytest.fail(f"{self.name} failed:\n{self.error}", pytrace=False)
        assert self.outcome is not None
        return self.outcome


# A time-limit job: (job id, workdir, time of submission).
TimeLimitJob = tuple[str, Path, float]


def submit_time_limit_jobs(cluster2: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TimeLimitJob]:
    """The jobs of TIME_LIMIT_JOBS, submitted (tests/conftest.py's ``time_limit_jobs`` fixture)."""
    jobs = {}
    for name, sbatch in TIME_LIMIT_JOBS.items():
        workdir = tmp_path_factory.mktemp(name)
        job = slow_tiny_job(cluster2, workdir, name, TIME_LIMIT_STEPS[name], STEP_SECONDS[name], *sbatch)
        jobs[name] = (job, workdir, time.monotonic())
    return jobs


def finished_time_limit_job(
    cluster2: SlurmCluster, jobs: dict[str, TimeLimitJob], name: str
) -> tuple[str, Path, str, dict[str, str]]:
    job, workdir, submitted = jobs[name]
    # Each segment pays the imports again (~20 s on a loaded 2-core machine, where a 1-minute segment
    # once trained only 6 steps): allow 25 minutes from submission, which costs nothing when the job is
    # done sooner.
    state = cluster2.wait_job(job, timeout=max(60.0, submitted + JOB_WAIT_S - time.monotonic()))
    log = job_log(workdir / "logs" / f"{name}-{job}.out")
    print(f"{name}: job {job} took {time.monotonic() - submitted:.0f} s from submission, {state['Restarts']} requeues")
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"
    assert state["NodeList"] == f"{cluster2.hosts[0][:-1]}[1-2]", state  # one task on each host
    return job, workdir, log, state


def assert_exact_resumes(
    run_dir: Path, log: str, job: str, max_steps: int, preempted: list[tuple[str, int, int]]
) -> None:
    """Each segment resumed at the step where the last one stopped; training ends at exactly max_steps and
    logged every step once, at the schedule's value for it."""
    resumed = [int(m[1]) for m in re.finditer(r"Resumed training at global step (\d+)", log)]
    assert resumed == [step for _, step, _ in preempted], log
    assert "not resumable" not in log, log  # every mid-epoch segment continued its epoch (src/data/resume.py)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == max_steps
    factor = LRFactor(schedule="cosine", total_steps=max_steps)
    lrs = lr_by_step(run_dir)
    assert sorted(lrs) == list(range(max_steps)), sorted(lrs)
    for k, values in lrs.items():
        assert len(values) == 1 and math.isclose(values[0], 0.05 * factor(k), rel_tol=1e-6), (k, values)


@pytest.mark.timeout(JOB_WAIT_S + 120)  # after wait_job's own, clearer timeout
def test_time_limit_with_warning_signal_ends_at_max_steps_through_requeues_alone(
    cluster2: SlurmCluster, time_limit_jobs: dict[str, TimeLimitJob]
) -> None:
    job, workdir, log, state = finished_time_limit_job(cluster2, time_limit_jobs, "warned")
    preempted = assert_clean_segments(log, job)
    print(f"warned: segments ended at {preempted}, then step {TIME_LIMIT_STEPS['warned']}")
    restarts = int(state["Restarts"])
    assert restarts >= 2 and [sig for sig, _, _ in preempted] == ["SIGUSR1"] * restarts, log  # >= 3 segments
    assert "DUE TO TIME LIMIT" not in log, log  # no segment met the hard limit
    assert_exact_resumes(workdir / "runs" / "warned" / f"slurm-{job}", log, job, TIME_LIMIT_STEPS["warned"], preempted)


@pytest.mark.timeout(JOB_WAIT_S + 120)  # after wait_job's own, clearer timeout
def test_hard_time_limit_sigterm_checkpoints_and_requeues(
    cluster2: SlurmCluster, time_limit_jobs: dict[str, TimeLimitJob]
) -> None:
    # Lightning alone saves nothing on SIGTERM and never requeues: a job that misses USR1 was lost.
    job, workdir, log, state = finished_time_limit_job(cluster2, time_limit_jobs, "hard")
    preempted = assert_clean_segments(log, job)
    print(f"hard: segments ended at {preempted}, then step {TIME_LIMIT_STEPS['hard']}")
    assert int(state["Restarts"]) >= 1 and [sig for sig, _, _ in preempted] == ["SIGTERM"] * int(state["Restarts"])
    assert "DUE TO TIME LIMIT" in log, log
    assert_exact_resumes(workdir / "runs" / "hard" / f"slurm-{job}", log, job, TIME_LIMIT_STEPS["hard"], preempted)


def test_ddp_across_two_hosts_matches_one_process(cluster2: SlurmCluster, tmp_path: Path) -> None:
    # 2 hosts x 1 task through the template: rendezvous at the first host of the node list, gloo across
    # the two network namespaces. Global batch 16 both ways (see test_scale's one-host version).
    ddp = run_config(tmp_path, "ddp", "src.data.synthetic.SyntheticDataModule", batch_size=8)
    (tmp_path / "logs").mkdir()
    submit = cluster2.run(
        "sbatch", "--parsable", "--job-name=ddp", "--output=logs/%x-%j.out", "--gres=none", "--nodes=2",
        "--ntasks-per-node=1", "--cpus-per-task=1", "--time=10", str(TEMPLATE), "-c", str(ddp), cwd=tmp_path,
    )  # fmt: skip
    job = submit.stdout.strip()
    fit_locally(  # meanwhile, the same global batch in one process
        run_config(tmp_path, "single", "tests.ddp_helpers.RankOrderedSynthetic", batch_size=8, world=2),
        "--trainer.devices=1",
        "--trainer.accumulate_grad_batches=2",
    )
    state = cluster2.wait_job(job, timeout=300)
    log = job_log(tmp_path / "logs" / f"ddp-{job}.out")
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"
    host1, host2 = cluster2.hosts
    assert state["NodeList"] == f"{host1[:-1]}[1-2]" and "Starting with 2 processes" in log, log

    rank0, rank1, single = (
        torch.load(tmp_path / d / f"rank{r}.pt") for d, r in (("ddp", 0), ("ddp", 1), ("single", 0))
    )
    m0, m1 = (json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (m0["world_size"], m0["global_step"], m1["global_step"]) == (2, 8, 8)
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), f"{key} differs between the hosts"
        if "running" in key or "num_batches" in key:
            continue  # DDP keeps each rank's BN running statistics; one process averages both shards
        torch.testing.assert_close(value, single[key], rtol=1e-4, atol=1e-5, msg=f"{key}: 2 hosts vs one process")
    # Each rank really ran on its own host: the DumpState files name the host they were written on.
    assert (m0["host"], m1["host"]) == (host1, host2)


def test_a_host_crash_requeues_the_job_which_resumes_from_the_last_checkpoint(host_crash: Scenario) -> None:
    print(host_crash.result())


def test_grid_is_a_job_array_whose_tasks_have_their_own_run_dirs_and_requeues(job_array: Scenario) -> None:
    print(job_array.result())


def host_crash_scenario(cluster: SlurmCluster, tmp_path: Path) -> str:
    """A job on 2 hosts; mid-run the second host crashes, and comes back once Slurm has requeued the job."""
    every = 5  # last_checkpoint.every_n_train_steps: the knob that bounds the work a crash loses
    config = write_tiny_config(tmp_path / "crash.yaml", max_steps=40)
    slow = '{"class_path": "tests.fault_injection.SlowSteps", "init_args": {"seconds": 0.5}}'
    progress = '{"class_path": "src.progress.TextProgress", "init_args": {"interval_s": 1e-6}}'
    (tmp_path / "logs").mkdir()
    submit = cluster.run(
        "sbatch", "--parsable", "--job-name=crash", "--output=logs/%x-%j.out", "--gres=none", "--nodes=2",
        "--ntasks-per-node=1", "--cpus-per-task=1", "--time=10", str(TEMPLATE), "-c", str(config),
        f"--trainer.callbacks+={slow}", f"--trainer.callbacks+={progress}", "--trainer.enable_progress_bar=true",
        f"--last_checkpoint.every_n_train_steps={every}", cwd=tmp_path,
    )  # fmt: skip
    job = submit.stdout.strip()
    log_path = tmp_path / "logs" / f"crash-{job}.out"
    run_dir = tmp_path / "runs" / "tiny" / f"slurm-{job}"
    deadline = time.monotonic() + 240
    while not re.search(r"\[train\] epoch \d+ step 1[3-9]/40", job_log(log_path)):
        state = cluster.job_state(job)
        assert time.monotonic() < deadline and state["JobState"] in ("PENDING", "RUNNING"), job_log(log_path)
        time.sleep(0.2)
    host = cluster.hosts[1]
    crashed_at = time.monotonic()
    cluster.crash_host(host)  # rank 1's host vanishes: network down, every process on it killed

    # Slurm notices the silent host (SlurmdTimeout), marks it down and requeues the job, which waits for it.
    state = cluster.wait_job(job, timeout=120, until=("PENDING",))
    assert state["JobState"] == "PENDING" and state["Restarts"] == "1", state
    down, requeued = cluster.node_state(host), time.monotonic() - crashed_at
    # The first segment is over and the second has not started: its log and checkpoint are final.
    (first, *_) = segments(job_log(log_path), job)
    steps = [int(m[1]) for m in re.finditer(r"\[train\] epoch \d+ step (\d+)/40", "\n".join(first))]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    cluster.start_host(host)  # the host comes back
    state = cluster.wait_job(job, timeout=300)
    log = job_log(log_path)
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"
    resumed = re.search(r"Resumed training at global step (\d+)", log)
    assert resumed and int(resumed[1]) == saved, log
    lost = max(steps) - saved
    assert 0 <= lost <= every, (steps, saved)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 40
    return (
        f"host {host} {down} and the job requeued {requeued:.0f} s after the crash; crash at step {max(steps)}, "
        f"resumed at {saved}: {lost} steps lost (checkpoint every {every}); {time.monotonic() - crashed_at:.0f} s "
        "from the crash to the end"
    )


def job_array_scenario(cluster: SlurmCluster, workdir: Path) -> str:
    """``submit.py --grid`` of 2 points on one host; task 1 is preempted at step 10, task 0 runs through."""
    config = write_tiny_config(workdir / "tiny.yaml", max_steps=24)
    at = 10  # mid-epoch 1 (8 steps per epoch): task 1 holds there for its signal; task 0 is released already
    (workdir / "release-0").touch()
    submit = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "slurm" / "submit.py"), str(config), "--gpus-per-node", "0",
         "--ntasks-per-node", "1", "--cpus-per-task", "1", "--time", "10:00", "--log-dir", "logs",
         "--grid", "model.lr=0.05,0.02", "--",
         hold_at(at, workdir / "held-$SLURM_ARRAY_TASK_ID", workdir / "release-$SLURM_ARRAY_TASK_ID")],
        cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    array = submit.stdout.split()[0]
    tasks = [f"{array}_0", f"{array}_1"]
    run_dirs = [workdir / "runs" / "tiny" / f"slurm-{t}" for t in tasks]
    logs = [workdir / "logs" / f"tiny-{t}.out" for t in tasks]
    wait_for(workdir / "held-1", cluster, tasks[1], logs[1])
    cluster.run("scancel", "--signal=USR1", tasks[1])  # preempt one task of the array

    for task, run_dir, log_path, lr in zip(tasks, run_dirs, logs, (0.05, 0.02), strict=True):
        state = cluster.wait_job(task, timeout=300)
        log = job_log(log_path)
        assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"
        assert f"array task {task}: --model.lr {lr}" in log, log
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 24
        first_lr = min(lr_by_step(run_dir).items())[1][0]
        assert math.isclose(first_lr, lr, rel_tol=1e-6), (task, first_lr)  # its own grid point
    # Only the preempted task was requeued, under its own id, into its own run directory.
    assert [cluster.job_state(t)["Restarts"] for t in tasks] == ["0", "1"]
    log0, log1 = map(job_log, logs)
    (preempted,) = assert_clean_segments(log1, tasks[1], restarts=1)
    assert preempted == ("SIGUSR1", at, 1) and f"requeued SLURM job {tasks[1]}" in log1, log1
    assert f"Resumed training at global step {at}" in log1 and "Resumed" not in log0
    return f"task {tasks[1]} preempted at step {at} and requeued alone; task {tasks[0]} ran through"
