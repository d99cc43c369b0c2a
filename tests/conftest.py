import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that start jobs which then run on Slurm's clock for minutes (tests/test_slurm.py) go first,
    # so that the rest of the suite runs while those jobs wait; later tests check their results.
    items.sort(key=lambda item: item.get_closest_marker("slurm_background") is None)


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
