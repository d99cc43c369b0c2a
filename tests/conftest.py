import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn
from unittest import mock

import pytest
import torch

if TYPE_CHECKING:
    from tests.slurm_cluster import SlurmCluster
    from tests.test_slurm import Scenario, TimeLimitJob

REPO = Path(__file__).resolve().parents[1]
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def missing_part(what: str) -> NoReturn:
    """A part this test needs is missing (``what`` names it and how to get it): with CI=true (.ci/run sets
    it) the test fails, so that CI cannot pass without the part; elsewhere it is skipped, saying why."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and a part this test needs is missing: {what}", pytrace=False)
    pytest.skip(what)


def require(missing: str | None) -> None:
    """:func:`missing_part` when ``missing`` (the reason a check found) is not None."""
    if missing is not None:
        missing_part(missing)


def require_module(name: str, install: str) -> ModuleType:
    """``import name``, or :func:`missing_part` naming it and ``install`` (how to get it)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing_part(f"cannot import {name} ({error}): {install}")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # A leaked SLURM_* or LOCAL_RANK makes Lightning think an external launcher runs us.
    for key in list(os.environ):
        if key.startswith(("SLURM_", "WANDB_")) or key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # Caches a run writes (the ImageNet per-pixel mean) go to a temp dir, never the user's ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    torch.manual_seed(0)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a temp dir (runs/ lands there) with configs/ reachable as in the repo."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    return tmp_path


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    if not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real Fashion-MNIST missing in {FMNIST_DIR}: apt-get install dataset-fashion-mnist")
    return FMNIST_DIR


def run_cli(*args: str) -> Any:
    """``python -m src.cli ARGS`` in this process; returns the LightningCLI."""
    from src.cli import main

    with mock.patch("sys.argv", ["src.cli"]):  # pytest's own argv is not the CLI's
        return main(list(args))


# Slurm test clusters (tests/slurm_cluster.py), here rather than in tests/test_slurm.py so that the hook
# below can start the background scenarios before whichever test comes first.
def slurm_cluster(
    tmp_path_factory: pytest.TempPathFactory, name: str, hosts: int, **kw: int
) -> Iterator["SlurmCluster"]:
    from tests.slurm_cluster import SlurmCluster, missing_requirements

    require(missing_requirements(hosts))
    with SlurmCluster(tmp_path_factory.mktemp(name), hosts=hosts, **kw) as c:
        # The jobs inherit this environment (sbatch --export=ALL): the repo on the path, no W&B, one
        # thread per rank so two ranks share the two cores of a laptop/CI machine. The template runs
        # `python` from PATH: this interpreter's (the tested .venv's), not whichever python PATH has first.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        c.env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", OMP_NUM_THREADS="1", PATH=path)
        yield c


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["SlurmCluster"]:
    """One host, 2 CPUs: this machine."""
    yield from slurm_cluster(tmp_path_factory, "slurm", hosts=1)


@pytest.fixture(scope="session")
def cluster2(tmp_path_factory: pytest.TempPathFactory) -> Iterator["SlurmCluster"]:
    """Two hosts with 3 CPUs each: the two time-limit jobs (1 task per host each) and one more fit."""
    yield from slurm_cluster(tmp_path_factory, "slurm2", hosts=2, cpus=3, slurmd_timeout=10)


@pytest.fixture(scope="session")
def crash_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["SlurmCluster"]:
    """Two hosts of their own for the host crash, which kills whatever runs on the host it crashes."""
    yield from slurm_cluster(tmp_path_factory, "slurm-crash", hosts=2, slurmd_timeout=10)


# The scenarios that run on Slurm's clock for minutes (tests/test_slurm.py), each started once, and the
# hosts its cluster needs.
SLURM_BACKGROUND = {"time_limit_jobs": 2, "host_crash": 2, "job_array": 1}


@pytest.fixture(scope="session")
def time_limit_jobs(cluster2: "SlurmCluster", tmp_path_factory: pytest.TempPathFactory) -> dict[str, "TimeLimitJob"]:
    from tests.test_slurm import submit_time_limit_jobs

    return submit_time_limit_jobs(cluster2, tmp_path_factory)


@pytest.fixture(scope="session")
def host_crash(crash_cluster: "SlurmCluster", tmp_path_factory: pytest.TempPathFactory) -> "Scenario":
    from tests.test_slurm import Scenario, host_crash_scenario

    return Scenario(host_crash_scenario, crash_cluster, tmp_path_factory.mktemp("crash"))


@pytest.fixture(scope="session")
def job_array(cluster: "SlurmCluster", tmp_path_factory: pytest.TempPathFactory) -> "Scenario":
    from tests.test_slurm import Scenario, job_array_scenario

    return Scenario(job_array_scenario, cluster, tmp_path_factory.mktemp("array"))


@pytest.fixture(scope="session", autouse=True)
def _slurm_background_first(request: pytest.FixtureRequest) -> None:
    # Each scenario a selected test requests starts before the first test, so that the rest of the suite
    # runs while it waits on Slurm's clock. A failure to start one is left to the tests that check it:
    # pytest caches it, and each of them reports it.
    from tests.slurm_cluster import missing_requirements

    requested = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    for name, hosts in SLURM_BACKGROUND.items():
        if name in requested and missing_requirements(hosts) is None:
            with contextlib.suppress(Exception, pytest.fail.Exception, pytest.skip.Exception):
                request.getfixturevalue(name)
