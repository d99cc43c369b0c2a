"""Real, tiny training runs through the CLI for the logging and report tests (a few seconds each)."""

import os
from pathlib import Path

import pytest
import wandb

from src.cli import main

REPO = Path(__file__).resolve().parents[1]


def tiny_args(save_dir: Path, name: str, *extra: str, epochs: int = 2) -> list[str]:
    """quickstart's network on 16x16 synthetic images: 3 train and 2 val batches per epoch, then the test."""
    return [
        "fit",
        "-c",
        str(REPO / "configs/quickstart.yaml"),
        "--data=src.data.synthetic.SyntheticDataModule",
        "--data.num_classes=10",
        "--data.in_channels=1",
        "--data.image_size=16",
        "--data.train_size=96",
        "--data.val_size=64",
        "--data.batch_size=32",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={save_dir}",
        f"--name={name}",
        *extra,
    ]


def isolate_wandb(mp: pytest.MonkeyPatch, home: Path) -> None:
    """wandb's settings, cache and artifacts in a temp dir, never the user's; no credentials."""
    wandb.teardown()  # wandb reads the environment once per process; forget what earlier tests set
    for key in list(os.environ):
        if key.startswith("WANDB_"):
            mp.delenv(key)
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        mp.setenv(key, str(home / key.lower()))
    mp.setenv("NETRC", str(home / "no-netrc"))
    mp.setenv("WANDB_SILENT", "true")


def fit(args: list[str]) -> Path:
    """Runs the CLI and returns the run directory (the CSV logger's)."""
    cli = main(args)
    assert wandb.run is None, "main() must finish its W&B run"
    assert cli.trainer.log_dir is not None, "the CLI always configures a logger, so a run has a log dir"
    return Path(cli.trainer.log_dir)
