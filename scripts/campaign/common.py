"""What every stage shares: its context, the Fashion-MNIST runs built on the experiments' stack, run facts."""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts import metrics
from scripts.runner import REPO

TRAVEL = REPO / ".travel"
FMNIST_SRC = Path("/usr/share/datasets/fashion-mnist")

StageResult = tuple[dict[str, Any], list[str]]  # data for results.json, Markdown for summary.md


@dataclass(frozen=True)
class Box:
    """A stage's time box in seconds, on the GPU and in --quick (CPU). ``gpu``/``quick`` 0 = what is left of
    the budget after the boxes of the later stages; the stage is skipped when less than its minimum is left."""

    gpu: float
    quick: float
    min_gpu: float
    min_quick: float
    reserve: bool = True  # whether the open-ended stage before it leaves this stage its box


@dataclass
class Context:
    """What a stage child knows: where to work, its deadline, the data, and earlier stages' results."""

    work: Path
    deadline: float  # time.time() by which the stage must be done
    quick: bool
    data_dir: Path
    results: dict[str, Any]
    repro_epochs: int | None = None

    @property
    def accel(self) -> str:
        return "cpu" if self.quick else "gpu"

    @property
    def gpu_args(self) -> list[str]:
        return [] if self.quick else ["--trainer.accelerator=gpu", "--trainer.devices=1"]

    def left(self) -> float:
        return self.deadline - time.time()

    def earlier(self, stage: str) -> dict[str, Any]:
        """The data an earlier stage of this campaign wrote ({} when it did not run or failed)."""
        return self.results.get(stage, {}).get("data") or {}


def steps_callback() -> str:
    """The ``--trainer.callbacks+=`` argument that makes a run record its steps per epoch."""
    return "--trainer.callbacks+=scripts.campaign.callbacks.StepsPerEpoch"


def fmnist_run(ctx: Context, name: str, group: str, root: Path, overrides: list[str], epochs: int | None) -> list[str]:
    """``fit`` arguments of a Fashion-MNIST run on the experiments' base stack (recipe + ResNet-20, turned
    into a variant by ``overrides``), data on the device, recording its steps per epoch."""
    from scripts.experiments.common import Run, command

    ns = argparse.Namespace(
        dataset="fmnist", data_dir=str(ctx.data_dir), epochs=epochs, limit_train_batches=None, quick=ctx.quick
    )
    return [
        "fit",
        *command(Run(name, overrides), group, ns, root),
        f"--data.init_args.data_dir={ctx.data_dir}",
        "--data.init_args.on_device=true",
        "--trainer.enable_progress_bar=false",  # a bar reads the loss back at every refresh: a host sync
        steps_callback(),
    ]


def epoch_table(run: metrics.Run) -> list[dict[str, Any]]:
    """Every epoch of a run as results.json keeps it: steps, whether complete, and its metrics."""
    return [
        {"epoch": e.index, "steps": e.steps, "complete": e.complete}
        | {k: round(v, 4) for k, v in e.values.items() if k.startswith(("train/", "val/", "perf/"))}
        for e in metrics.epochs(run)
    ]


def read_run(folder: Path) -> metrics.Run | None:
    """The run under ``folder`` (its newest version that logged metrics), or None when none did."""
    try:
        runs = [r for r in metrics.find_runs([folder]) if r.rows]
    except FileNotFoundError:
        return None
    return runs[-1] if runs else None


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
