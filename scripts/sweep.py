"""A local grid: one ``python -m src.cli fit`` per point, ``--jobs`` at a time, GPUs handed out round-robin.

    python scripts/sweep.py -c configs/recipes/cifar.yaml -c configs/models/resnet20.yaml \
        --grid model.lr=0.1,0.05 --grid model.weight_decay=1e-4,5e-4 --jobs 2 --gpus 0,1
    python scripts/sweep.py -c configs/quickstart.yaml --grid model.lr=0.1,0.05 --seeds 3 -- --trainer.max_epochs 2

Each point runs as ``<name>-<key><value>...`` in W&B group ``--group`` (default: ``sweep``), so
``scripts/report.py runs/<...>`` compares them (seeds of one point as mean ± std). A running job holds
one GPU (``CUDA_VISIBLE_DEVICES``) from ``--gpus`` until it ends; without ``--gpus`` the jobs share
the machine. The same grid on SLURM: ``scripts/slurm/submit.py --grid`` (a job array); W&B sweeps:
``configs/sweeps/`` (docs/logging.md).
"""

import argparse
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts.slurm.submit import expand_grid

REPO = Path(__file__).resolve().parents[1]


def points(grid: list[str], seeds: int) -> list[tuple[str, list[str]]]:
    """(run name suffix, CLI overrides) per grid point and seed."""
    out = []
    for point in expand_grid(grid):
        suffix = "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in point)
        args = [f"--{k}={v}" for k, v in point]
        for seed in range(seeds) if seeds > 1 else [None]:
            name = "-".join(p for p in (suffix, None if seed is None else f"seed{seed}") if p)
            out.append((name, args + ([] if seed is None else [f"--seed_everything={seed}"])))
    return out


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
    if gpus and args.jobs > len(gpus):
        raise SystemExit(f"error: --jobs {args.jobs} is more than the {len(gpus)} GPUs of --gpus {args.gpus}")
    configs = [a for c in args.config for a in ("-c", c)]
    runs = []
    for suffix, overrides in points(args.grid, args.seeds):
        name = f"{args.name}-{suffix}" if suffix else args.name  # its own runs/<name>/: no version race
        runs.append((name, [*configs, *overrides, f"--name={name}", f"--wandb.name={name}",
                            f"--wandb.group={args.name}", *extra]))  # fmt: skip
    if args.dry_run:
        for name, cmd in runs:
            print(name, " ".join(cmd))
        return []
    free: queue.Queue[str | None] = queue.Queue()
    for i in range(args.jobs):
        free.put(gpus[i] if gpus else None)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    args.log_dir.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[str, list[str]]) -> tuple[str, int, str | None]:
        name, cmd = item
        gpu = free.get()  # held until this run ends: no two running jobs share a GPU
        try:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            start = time.perf_counter()
            print(f"{name}: start" + (f" on GPU {gpu}" if gpu is not None else ""), flush=True)
            with open(args.log_dir / f"{name}.log", "w") as log:
                rc = subprocess.call([sys.executable, "-m", "src.cli", "fit", *cmd], env=env, stdout=log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
            print(f"{name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - start:.0f} s")
            return name, rc, gpu
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, runs))
    failed = [name for name, rc, _ in results if rc]
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed ({', '.join(failed)}); logs in {args.log_dir}")
    return results


if __name__ == "__main__":
    main()
