"""Shared runner of the paper reproductions: a list of CLI runs -> local processes or SLURM jobs -> report.

An experiment is a name and a list of runs; a run is a name and the command-line overrides that
turn the base config into that variant. Every run is an ordinary ``python -m src.cli fit`` with
``--wandb.group <experiment>``, so it can also be re-run, resumed or inspected on its own.
"""

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scripts.runner import run_local
from src.models.resnet import ResNet

REPO = Path(__file__).resolve().parents[2]

CIFAR_FILES = "cifar-10-batches-py/data_batch_1"
# The two recipes (each with ResNet-20): the paper's CIFAR schedule, and a shorter one on Fashion-MNIST
# (offline). A run's overrides (depth, unit, shortcut, ...) turn ResNet-20 into its variant.
BASE = {
    "cifar10": ["configs/recipes/cifar.yaml"],
    "fmnist": ["configs/recipes/fmnist.yaml"],
}
WARMUP = "configs/recipes/warmup.yaml"  # the papers' warm-up: its values live there and nowhere else


@dataclass
class Run:
    name: str
    overrides: list[str] = field(default_factory=list)


def with_seeds(runs: list[Run], seeds: int) -> list[Run]:
    """Each run ``seeds`` times as ``<name>-seed<k>`` with ``seed_everything`` k (unchanged for one seed).

    seed_everything only: the validation split (``data.seed``) stays the same, so seeds compare alike.
    """
    if seeds <= 1:
        return runs
    return [
        Run("-".join(p for p in (r.name, f"seed{k}") if p), [*r.overrides, f"--seed_everything={k}"])
        for r in runs
        for k in range(seeds)
    ]


def net_args(**init_args: object) -> list[str]:
    """``--model.net.init_args.KEY=VALUE`` overrides (lists in YAML flow syntax)."""
    out = []
    for key, value in init_args.items():
        text = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list | tuple) else str(value)
        out.append(f"--model.net.init_args.{key}={text}")
    return out


def cifar_depth_args(depth: int, block: str = "basic", **init_args: object) -> list[str]:
    """Overrides for a 3-stage CIFAR net of ``depth`` layers (6n+2 basic, 9n+2 bottleneck).

    From 110 layers on, the paper warms up (configs/recipes/warmup.yaml: lr 0.01 for ~400 iterations).
    """
    net_name(depth=depth, block=block, stem="cifar", **init_args)  # a depth off the 6n+2 / 9n+2 rule fails here
    warmup = ["-c", WARMUP] if depth >= 110 else []
    return warmup + net_args(depth=depth, **({"block": block} if block != "basic" else {}), **init_args)


def net_name(**init_args: object) -> str:
    """The run name the network gives itself (``ResNet.name``: r56, plain20, r110-full_preact-B)."""
    with torch.device("meta"):  # no memory, no compute: only the arguments are checked
        return ResNet(**init_args).name  # type: ignore[arg-type]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--dataset",
        choices=["auto", "cifar10", "fmnist"],
        default="auto",
        help="cifar10 with the paper's schedule when its files are in --data-dir, else Fashion-MNIST (offline)",
    )
    p.add_argument("--data-dir", default="./data", help="where cifar-10-batches-py/ lives")
    p.add_argument("--epochs", type=int, help="Fashion-MNIST epochs (default: the config's 30; lr /10 at 50%%, 75%%)")
    p.add_argument("--limit-train-batches", type=float, help="fraction of each training epoch (CPU budgets)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 epoch of 2 batches per run (CI)")
    p.add_argument("--jobs", type=int, default=1, help="local runs in parallel (threads split among them)")
    p.add_argument("--seeds", type=int, default=1, help="runs per variant, seeds 0..N-1 (the report gives mean ± std)")
    p.add_argument("--out", type=Path, help="root of the runs (default runs/experiments/<name>)")
    p.add_argument("--report", type=Path, help="report folder (default reports/<name>)")
    p.add_argument("--slurm", action="store_true", help="submit each run with scripts/slurm/submit.py instead")
    p.add_argument("--slurm-arg", action="append", default=[], help="passed to submit.py (repeatable)")
    return p


def dataset(args: argparse.Namespace) -> str:
    if args.dataset != "auto":
        return args.dataset
    return "cifar10" if (Path(args.data_dir) / CIFAR_FILES).exists() else "fmnist"


def command(run: Run, name: str, args: argparse.Namespace, root: Path) -> list[str]:
    ds = dataset(args)
    cmd = [arg for config in BASE[ds] for arg in ("-c", config)]
    if ds == "cifar10":
        cmd.append(f"--data.init_args.data_dir={args.data_dir}")
    cmd += run.overrides
    cmd += [
        f"--wandb.group={name}",
        f"--wandb.name={run.name}",
        f"--trainer.default_root_dir={root}",
        f"--name={run.name}",
    ]
    if ds == "fmnist" and args.epochs:
        # keep the recipe's shape: lr / 10 at 50% and 75% of the run (as 15 and 23 of 30 epochs)
        e = args.epochs
        cmd += [
            f"--trainer.max_epochs={e}",
            f"--model.milestones=[{max(1, e // 2)}, {max(1, e // 2) + max(1, e // 4)}]",
        ]
    if args.limit_train_batches:
        cmd.append(f"--trainer.limit_train_batches={args.limit_train_batches}")
    if args.quick:
        cmd += [
            "--trainer.max_epochs=1",
            "--trainer.max_steps=-1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.limit_test_batches=2",
            "--trainer.enable_progress_bar=false",
        ]
    return cmd


def submit(cmds: dict[str, list[str]], args: argparse.Namespace, name: str) -> None:
    stack = BASE[dataset(args)]  # every command() starts with `-c` and each file of this stack
    *bases, config = stack
    base_args = [arg for base in bases for arg in ("--base", base)]
    for cmd in cmds.values():
        submit_cmd = [sys.executable, "scripts/slurm/submit.py", config, *base_args, "--group", name]
        submit_cmd += [*args.slurm_arg, "--", *cmd[2 * len(stack) :]]
        print("$", " ".join(submit_cmd), flush=True)
        subprocess.run(submit_cmd, cwd=REPO, check=True)
    print(f"submitted {len(cmds)} jobs; when they finish: python scripts/report.py runs --out reports/{name}")


def main(name: str, title: str, runs: list[Run], args: argparse.Namespace, panels: str | None = None) -> Path | None:
    """Runs ``runs`` (locally or on SLURM) and writes the report (one figure panel per value of the run
    fact ``panels``, x in iterations as in the papers); returns the report folder."""
    runs = with_seeds(runs, args.seeds)
    root = (args.out or REPO / "runs" / "experiments" / name).resolve()
    report = (args.report or REPO / "reports" / name).resolve()
    cmds = {run.name: command(run, name, args, root) for run in runs}
    print(f"{name}: {len(runs)} runs on {dataset(args)} -> {root}", flush=True)
    if args.slurm:
        submit(cmds, args, name)
        return None
    start = time.perf_counter()
    run_local(cmds, args.jobs, root / "logs")
    print(f"{name}: all runs done in {time.perf_counter() - start:.0f} s", flush=True)
    report_args = ["--out", str(report), "--title", title, "--x", "step", *(["--panels", panels] if panels else [])]
    subprocess.run(
        [sys.executable, "scripts/report.py", str(root), *report_args],
        cwd=REPO,
        check=True,
    )
    print(f"report: {report / 'report.md'}")
    return report
