"""scripts/slurm on a real one-host Slurm cluster (tests/slurm_cluster.py): DDP over 2 tasks, and
preemption -> checkpoint -> requeue -> resume -> exactly max_steps.

Skipped, with the reason, only where the Slurm/munge daemons are not installed (or not root);
.ci/run installs them with apt.
"""

import csv
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from src.models.classifier import LRFactor
from tests.fault_injection import write_tiny_config
from tests.slurm_cluster import SlurmCluster, missing_requirements

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "scripts" / "slurm" / "train.sbatch"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture
def workdir(tmp_path: Path, cluster: SlurmCluster) -> Path:
    # The jobs inherit this environment (sbatch --export=ALL): the repo on the path, no W&B, one
    # thread per rank so two ranks share the two cores of a laptop/CI machine. The template runs
    # `python` from PATH: this interpreter's (the tested .venv's), not whichever python PATH has first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    cluster.env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", OMP_NUM_THREADS="1", PATH=path)
    return tmp_path


def job_log(path: Path) -> str:
    return path.read_text() if path.exists() else "<no job log>"


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


@pytest.mark.parametrize("signal_name", ["USR1", "TERM"])
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

    # Slurm holds a requeued job for 120 s (reason BeginTime); let it start again right away.
    state = cluster.wait_job(job_id, timeout=120, until=("PENDING",))
    if state["JobState"] == "PENDING" and state["Reason"] == "BeginTime":
        cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
    state = cluster.wait_job(job_id, timeout=240)
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
    assert "Requeued SLURM job" in log and f"job {job_id} restart 1" in log, log

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
    assert os.environ.get("SLURM_JOB_ID") is None  # nothing leaked into the test process
