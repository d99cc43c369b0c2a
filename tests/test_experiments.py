"""The paper-reproduction scripts end to end in their --quick form: real CLI runs -> report files."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

EXPERIMENTS = {
    "degradation": (["--depths", "20", "32"], ["plain20", "plain32", "r20", "r32"]),
    "units": (
        ["--basic-depth", "8", "--bottleneck-depth", "11"],
        [
            f"r{d}-{u}"
            for d in (8, 11)
            for u in ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")
        ],
    ),
    "shortcuts": (["--cifar-depth", "8"], ["r8-A", "r8-B", "r8-C", "r34-A", "r34-B", "r34-C"]),
    "depth": (["--depths", "8", "14"], ["r8", "r14"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_quick_experiment_runs_and_reports(name: str, tmp_path: Path, fmnist_dir: Path) -> None:
    args, runs = EXPERIMENTS[name]
    out, report = tmp_path / "runs", tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            f"scripts/experiments/{name}.py",
            "--quick",
            "--jobs",
            "2",
            "--out",
            str(out),
            "--report",
            str(report),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on fmnist" in proc.stdout  # no CIFAR-10 here: the offline dataset is chosen
    md = (report / "report.md").read_text()
    for run in runs:
        assert f"| {run} |" in md, f"{run} missing from the report table"
        metrics = out / run / "version_0" / "metrics.csv"
        rows = list(csv.DictReader(metrics.open()))
        assert any(r.get("test/err1") for r in rows), f"{run} was not tested"
    figure = next((report / "figures").glob("*.png"))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in (report / "report.html").read_text()


def test_slurm_submission_keeps_each_run_s_config_stack(tmp_path: Path) -> None:
    # --slurm hands every run to scripts/slurm/submit.py (here in --dry-run: the sbatch lines only):
    # the recipe as the -c file, the warm-up file for ResNet-110 only, the net by its depth.
    cmd = [sys.executable, "scripts/experiments/depth.py", "--dataset", "cifar10", "--depths", "20", "110", "--slurm"]
    proc = subprocess.run(
        [*cmd, "--slurm-arg=--dry-run", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split("--name=")[-1].split()[0]: line for line in proc.stdout.splitlines() if "sbatch" in line}
    assert set(lines) == {"r20", "r110"} and all("configs/recipes/cifar.yaml" in line for line in lines.values())
    assert "-c configs/recipes/warmup.yaml" in lines["r110"] and "warmup" not in lines["r20"]
    assert "--model.net.init_args.depth=110" in lines["r110"] and "--model.net.init_args.depth=20" in lines["r20"]
