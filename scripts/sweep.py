"""A local grid: one ``python -m src.cli fit`` per point, ``--jobs`` at a time, GPUs handed out round-robin.

    python scripts/sweep.py -c configs/recipes/cifar.yaml --grid model.net.init_args.depth=20,56 \
        --grid model.lr=0.1,0.05 --grid model.weight_decay=1e-4,5e-4 --jobs 2 --gpus 0,1
    python scripts/sweep.py -c configs/quickstart.yaml --grid model.lr=0.1,0.05 --seeds 3 -- --trainer.max_epochs 2

Each point runs as ``<name>-<key><value>...`` in W&B group ``--group`` (default: ``sweep``), so
``scripts/report.py runs/<...>`` compares them (seeds of one point as mean ± std). A running job holds
one GPU (``CUDA_VISIBLE_DEVICES``) from ``--gpus`` until it ends; without ``--gpus`` the jobs share
the machine. The same grid on SLURM: ``scripts/slurm/submit.py --grid`` (a job array); W&B sweeps:
``configs/sweeps/`` (docs/logging.md).
"""

import argparse
import sys
from pathlib import Path

from scripts.experiments.common import Run, with_seeds
from scripts.runner import run_local
from scripts.slurm.submit import expand_grid, point_name

REPO = Path(__file__).resolve().parents[1]


def points(grid: list[str], seeds: int) -> list[tuple[str, list[str]]]:
    """(run name suffix, CLI overrides) per grid point and seed."""
    runs = [Run(point_name(point), [f"--{k}={v}" for k, v in point]) for point in expand_grid(grid)]
    return [(run.name, run.overrides) for run in with_seeds(runs, seeds)]


def main(argv: list[str] | None = None) -> list[tuple[str, int, str | None]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", action="append", required=True, help="config files, in order (repeatable)")
    p.add_argument("--grid", action="append", default=[], help="KEY=V1,V2: one run per value (repeatable)")
    p.add_argument("--seeds", type=int, default=1, help="runs per point, seed_everything 0..N-1")
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--gpus", help="comma-separated GPU ids, one per running job (round-robin)")
    p.add_argument("--name", default="sweep", help="run name prefix and W&B group")
    p.add_argument("--log-dir", type=Path, default=Path("runs/sweeps"), help="one log file per run")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.seeds < 1:
        raise SystemExit(f"error: --jobs {args.jobs} and --seeds {args.seeds} must be >= 1")
    gpus = [g for g in (args.gpus or "").split(",") if g]
    configs = [a for c in args.config for a in ("-c", c)]
    runs = {}
    for suffix, overrides in points(args.grid, args.seeds):
        name = f"{args.name}-{suffix}" if suffix else args.name  # its own runs/<name>/: no version race
        runs[name] = [*configs, *overrides, f"--name={name}", f"--wandb.name={name}", f"--wandb.group={args.name}",
                      *extra]  # fmt: skip
    if args.dry_run:
        for name, cmd in runs.items():
            print(name, " ".join(cmd))
        return []
    # From the current directory, as the paths on the command line are meant.
    return run_local(runs, args.jobs, args.log_dir, gpus, cwd=None)


if __name__ == "__main__":
    main()
