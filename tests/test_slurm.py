"""scripts/slurm on real Slurm clusters (tests/slurm_cluster.py), nothing mocked.

One host: DDP over 2 tasks; a hand-sent SIGUSR1/SIGTERM -> checkpoint -> requeue -> exactly max_steps.
Two hosts (network namespaces): DDP across hosts; real time limits, with the warning signal and without
it (the hard limit's SIGTERM), through requeues alone; a host that crashes mid-run.

The time-limit jobs spend minutes waiting on Slurm's clock, not on the CPU: they are submitted by the
first test of the session (conftest moves ``slurm_background`` tests first) and checked at the end.

Skipped, with the reason, where the Slurm/munge daemons are not installed (or not root); with CI=true
(set by .ci/run) that fails instead, so CI cannot pass without running them.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from src.models.classifier import LRFactor
from tests.fault_injection import write_tiny_config
from tests.slurm_cluster import SlurmCluster, missing_requirements
from tests.test_scale import fit as fit_locally
from tests.test_scale import run_config

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "scripts" / "slurm" / "train.sbatch"
pytestmark = pytest.mark.slow


def require_slurm(hosts: int) -> None:
    reason = missing_requirements(hosts)
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and the Slurm tests cannot run: {reason}")
        pytest.skip(reason)


def job_env(cluster: SlurmCluster) -> SlurmCluster:
    # The jobs inherit this environment (sbatch --export=ALL): the repo on the path, no W&B, one
    # thread per rank so two ranks share the two cores of a laptop/CI machine. The template runs
    # `python` from PATH: this interpreter's (the tested .venv's), not whichever python PATH has first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    cluster.env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", OMP_NUM_THREADS="1", PATH=path)
    return cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    require_slurm(1)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield job_env(c)


@pytest.fixture(scope="session")
def cluster2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Two hosts with 3 CPUs each: the two background jobs (1 task per host each) and one more fit."""
    require_slurm(2)
    with SlurmCluster(tmp_path_factory.mktemp("slurm2"), hosts=2, cpus=3, slurmd_timeout=10) as c:
        yield job_env(c)


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


# SIGTERM inside SLURM: the hard time limit below; outside SLURM: tests/test_fault_tolerance.py.
@pytest.mark.parametrize("signal_name", ["USR1"])
def test_preemption_checkpoints_requeues_and_resumes_to_max_steps(
    cluster: SlurmCluster, workdir: Path, signal_name: str
) -> None:
    max_steps = 160  # 4 steps per epoch per rank: long enough to be signalled mid-run, even on a busy machine
    config = write_tiny_config(workdir / "tiny.yaml", max_steps=max_steps, widths="[8, 16]", image_size=16)
    (workdir / "logs").mkdir()
    submit = cluster.run(
        "sbatch", "--parsable", "--job-name=preempt", "--output=logs/%x-%j.out", "--gres=none", "--nodes=1",
        "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10:00", str(TEMPLATE), "-c", str(config),
        cwd=workdir,
    )  # fmt: skip
    job_id = submit.stdout.strip()
    log_path = workdir / "logs" / f"preempt-{job_id}.out"
    ckpt_dir = workdir / "runs" / "tiny" / f"slurm-{job_id}" / "checkpoints"

    # Once the first epoch's checkpoint exists training is under way: send what `--signal=SIGUSR1@90`
    # sends before the time limit, or the SIGTERM of a hard limit or an eviction (to the job's srun
    # tasks, not to the batch shell).
    deadline = time.monotonic() + 180
    while not (ckpt_dir / "last.ckpt").exists():
        assert time.monotonic() < deadline, f"no checkpoint in {ckpt_dir}\n{cluster.job_state(job_id)}"
        assert cluster.job_state(job_id).get("JobState") in ("PENDING", "RUNNING"), job_log(log_path)
        time.sleep(0.2)
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
    step, epoch = int(preempted[1]), int(preempted[2])
    print(f"preempted at step {step} (epoch {epoch}); resumed at step {resumed[1]} (epoch {resumed[2]})")
    assert 0 < step < max_steps
    # Preempted on an epoch's last batch (4 steps per epoch), that epoch is complete: training resumes
    # at the next one (its end-of-epoch validation is the one thing skipped). Otherwise: the same epoch.
    assert (int(resumed[1]), int(resumed[2])) == (step, epoch + 1 if step % 4 == 0 else epoch)
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


class Background:
    """Scenarios that run on Slurm's clock in threads while the rest of the suite runs, checked at the end.

    A scenario's assertions fail inside its thread; the test that checks it re-raises the failure.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[str, Path, float]] = {}  # time-limit job -> (job id, workdir, submit time)
        self.threads: dict[str, threading.Thread] = {}
        self.results: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def start(self, name: str, scenario: Callable[..., str], *args: object) -> None:
        def run() -> None:
            try:
                self.results[name] = scenario(*args)
            except BaseException:
                self.errors[name] = traceback.format_exc()

        self.threads[name] = threading.Thread(target=run, name=name, daemon=True)
        self.threads[name].start()

    def result(self, name: str, timeout: float = 900) -> str:
        if name not in self.threads:
            pytest.fail(f"scenario {name} was never started (test_background_jobs_start runs first)")
        self.threads[name].join(timeout)
        if self.threads[name].is_alive():
            pytest.fail(f"scenario {name} still running after {timeout} s more")
        if name in self.errors:
            pytest.fail(f"scenario {name} failed:\n{self.errors[name]}", pytrace=False)
        return self.results[name]


BACKGROUND = Background()
# A 1-minute limit with USR1 40 s before it; and one with no usable warning (SIGURG, ignored by Python,
# as when USR1 is missed), so that only the hard limit's SIGTERM ends each segment.
# The hard limit's job gets 2 minutes, so that its last segment ends well before its limit.
TIME_LIMIT_JOBS = {"warned": ("--time=1", "--signal=USR1@40"), "hard": ("--time=2", "--signal=URG@1")}
# Steps of 2 s under a 1-minute limit: a segment trains 27 steps at most, so 60 steps need >= 3 segments.
# Steps of 1 s under 2 minutes: >= 2 segments for 150 steps, the last well inside its limit.
TIME_LIMIT_STEPS = {"warned": 60, "hard": 150}
STEP_SECONDS = {"warned": 2.0, "hard": 1.0}
JOB_WAIT_S = 1500


@pytest.mark.slurm_background
def test_background_jobs_start(
    cluster: SlurmCluster, cluster2: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Started first and checked last (see the module docstring): these wait on Slurm's clock.
    for name, sbatch in TIME_LIMIT_JOBS.items():
        workdir = tmp_path_factory.mktemp(name)
        job = slow_tiny_job(cluster2, workdir, name, TIME_LIMIT_STEPS[name], STEP_SECONDS[name], *sbatch)
        BACKGROUND.jobs[name] = (job, workdir, time.monotonic())
    BACKGROUND.start("host crash", host_crash_scenario, cluster2, tmp_path_factory.mktemp("crash"))
    BACKGROUND.start("job array", job_array_scenario, cluster, tmp_path_factory.mktemp("array"))
    for job, _, _ in BACKGROUND.jobs.values():
        state = cluster2.wait_job(job, timeout=120, until=("RUNNING",))
        assert state["JobState"] == "RUNNING" and state["NodeList"] == f"{cluster2.hosts[0][:-1]}[1-2]", state


def finished_time_limit_job(cluster2: SlurmCluster, name: str) -> tuple[str, Path, str, dict[str, str]]:
    if name not in BACKGROUND.jobs:
        pytest.fail("test_background_jobs_start did not submit the job (it runs first)")
    job, workdir, submitted = BACKGROUND.jobs[name]
    # Each segment pays the imports again (~20 s on a loaded 2-core machine, where "warned" trains only
    # ~6 of its 60 steps per 1-minute segment): allow 25 minutes from submission, which costs nothing when
    # the job is done sooner.
    state = cluster2.wait_job(job, timeout=max(60.0, submitted + JOB_WAIT_S - time.monotonic()))
    log = job_log(workdir / "logs" / f"{name}-{job}.out")
    print(f"{name}: job {job} took {time.monotonic() - submitted:.0f} s from submission, {state['Restarts']} requeues")
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"
    return job, workdir, log, state


def assert_exact_resumes(
    run_dir: Path, log: str, job: str, max_steps: int, preempted: list[tuple[str, int, int]]
) -> None:
    """Each segment resumed at the step where the last one stopped; training ends at exactly max_steps and
    logged every step once, at the schedule's value for it."""
    resumed = [int(m[1]) for m in re.finditer(r"Resumed training at global step (\d+)", log)]
    assert resumed == [step for _, step, _ in preempted], log
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == max_steps
    factor = LRFactor(schedule="cosine", total_steps=max_steps)
    lrs = lr_by_step(run_dir)
    assert sorted(lrs) == list(range(max_steps)), sorted(lrs)
    for k, values in lrs.items():
        assert len(values) == 1 and math.isclose(values[0], 0.05 * factor(k), rel_tol=1e-6), (k, values)


@pytest.mark.timeout(JOB_WAIT_S + 120)  # after wait_job's own, clearer timeout
def test_time_limit_with_warning_signal_ends_at_max_steps_through_requeues_alone(cluster2: SlurmCluster) -> None:
    job, workdir, log, state = finished_time_limit_job(cluster2, "warned")
    preempted = assert_clean_segments(log, job)
    print(f"warned: segments ended at {preempted}, then step {TIME_LIMIT_STEPS['warned']}")
    assert int(state["Restarts"]) >= 2 and len(preempted) == int(state["Restarts"]), log  # >= 3 segments
    # USR1 reaches the training (held while it imports) unless it comes before the job step starts: then the
    # hard limit's SIGTERM.
    assert any(sig == "SIGUSR1" for sig, _, _ in preempted), log
    assert_exact_resumes(workdir / "runs" / "warned" / f"slurm-{job}", log, job, TIME_LIMIT_STEPS["warned"], preempted)


@pytest.mark.timeout(JOB_WAIT_S + 120)  # after wait_job's own, clearer timeout
def test_hard_time_limit_sigterm_checkpoints_and_requeues(cluster2: SlurmCluster) -> None:
    # Lightning alone saves nothing on SIGTERM and never requeues: a job that misses USR1 was lost.
    job, workdir, log, state = finished_time_limit_job(cluster2, "hard")
    preempted = assert_clean_segments(log, job)
    print(f"hard: segments ended at {preempted}, then step {TIME_LIMIT_STEPS['hard']}")
    assert int(state["Restarts"]) >= 1 and [sig for sig, _, _ in preempted] == ["SIGTERM"] * int(state["Restarts"])
    assert "DUE TO TIME LIMIT" in log, log
    assert_exact_resumes(workdir / "runs" / "hard" / f"slurm-{job}", log, job, TIME_LIMIT_STEPS["hard"], preempted)


def test_ddp_across_two_hosts_matches_one_process(cluster2: SlurmCluster, tmp_path: Path) -> None:
    # 2 hosts x 1 task through the template: rendezvous at the first host of the node list, gloo across
    # the two network namespaces. Global batch 16 both ways (see test_scale's one-host version).
    BACKGROUND.result("host crash")  # which kills whatever runs on the second host
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


def test_a_host_crash_requeues_the_job_which_resumes_from_the_last_checkpoint() -> None:
    require_slurm(2)
    print(BACKGROUND.result("host crash"))


def test_grid_is_a_job_array_whose_tasks_have_their_own_run_dirs_and_requeues() -> None:
    require_slurm(1)
    print(BACKGROUND.result("job array"))


def host_crash_scenario(cluster2: SlurmCluster, tmp_path: Path) -> str:
    """A job on 2 hosts; mid-run the second host crashes, and comes back once Slurm has requeued the job."""
    for name in TIME_LIMIT_JOBS:  # the crash would kill their processes on that host too
        cluster2.wait_job(BACKGROUND.jobs[name][0], timeout=900)
    every = 5  # last_checkpoint.every_n_train_steps: the knob that bounds the work a crash loses
    config = write_tiny_config(tmp_path / "crash.yaml", max_steps=40)
    slow = '{"class_path": "tests.fault_injection.SlowSteps", "init_args": {"seconds": 0.5}}'
    progress = '{"class_path": "src.progress.TextProgress", "init_args": {"interval_s": 1e-6}}'
    (tmp_path / "logs").mkdir()
    submit = cluster2.run(
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
        assert time.monotonic() < deadline and cluster2.job_state(job)["JobState"] in ("PENDING", "RUNNING"), job_log(
            log_path
        )
        time.sleep(0.2)
    host = cluster2.hosts[1]
    crashed_at = time.monotonic()
    cluster2.crash_host(host)  # rank 1's host vanishes: network down, every process on it killed
    steps = [int(m[1]) for m in re.finditer(r"\[train\] epoch \d+ step (\d+)/40", job_log(log_path))]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]

    # Slurm notices the silent host (SlurmdTimeout), marks it down and requeues the job, which waits for it.
    state = cluster2.wait_job(job, timeout=120, until=("PENDING",))
    assert state["JobState"] == "PENDING" and state["Restarts"] == "1", state
    down, requeued = cluster2.node_state(host), time.monotonic() - crashed_at
    cluster2.start_host(host)  # the host comes back
    state = cluster2.wait_job(job, timeout=300)
    log = job_log(log_path)
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"
    resumed = re.search(r"Resumed training at global step (\d+)", log)
    assert resumed and int(resumed[1]) == saved, log
    lost = max(steps) - saved
    assert 0 <= lost <= every
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 40
    return (
        f"host {host} {down} and the job requeued {requeued:.0f} s after the crash; crash at step {max(steps)}, "
        f"resumed at {saved}: {lost} steps lost (checkpoint every {every}); {time.monotonic() - crashed_at:.0f} s "
        "from the crash to the end"
    )


def job_array_scenario(cluster: SlurmCluster, workdir: Path) -> str:
    """``submit.py --grid`` of 2 points on one host; one task is preempted."""
    config = write_tiny_config(workdir / "tiny.yaml", max_steps=60)
    slow = '{"class_path": "tests.fault_injection.SlowSteps", "init_args": {"seconds": 0.3}}'
    submit = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "slurm" / "submit.py"), str(config), "--gpus-per-node", "0",
         "--ntasks-per-node", "1", "--cpus-per-task", "1", "--time", "10:00", "--log-dir", "logs",
         "--grid", "model.lr=0.05,0.02", "--", f"--trainer.callbacks+={slow}"],
        cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    array = submit.stdout.split()[0]
    tasks = [f"{array}_0", f"{array}_1"]
    run_dirs = [workdir / "runs" / "tiny" / f"slurm-{t}" for t in tasks]
    deadline = time.monotonic() + 180
    while not (run_dirs[1] / "checkpoints" / "last.ckpt").exists():  # task 1 finished an epoch
        assert time.monotonic() < deadline, cluster.job_state(tasks[1])
        time.sleep(0.2)
    cluster.run("scancel", "--signal=USR1", tasks[1])  # preempt one task of the array

    logs = []
    for task, run_dir, lr in zip(tasks, run_dirs, (0.05, 0.02), strict=True):
        state = cluster.wait_job(task, timeout=300)
        log = job_log(workdir / "logs" / f"tiny-{task}.out")
        logs.append(log)
        assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{log}"
        assert f"array task {task}: --model.lr {lr}" in log, log
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 60
        first_lr = min(lr_by_step(run_dir).items())[1][0]
        assert math.isclose(first_lr, lr, rel_tol=1e-6), (task, first_lr)  # its own grid point
    # Only the preempted task was requeued, under its own id, into its own run directory.
    assert [cluster.job_state(t)["Restarts"] for t in tasks] == ["0", "1"]
    (preempted,) = assert_clean_segments(logs[1], tasks[1], restarts=1)
    assert preempted[0] == "SIGUSR1" and f"requeued SLURM job {tasks[1]}" in logs[1], logs[1]
    assert f"Resumed training at global step {preempted[1]}" in logs[1] and "Resumed" not in logs[0]
    return f"task {tasks[1]} preempted at step {preempted[1]} and requeued alone; task {tasks[0]} ran through"
