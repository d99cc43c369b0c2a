"""Submit training runs to SLURM through scripts/slurm/train.sbatch: one config, a sweep, or a group.

    python scripts/slurm/submit.py configs/r50.yaml                          # one job
    python scripts/slurm/submit.py configs/r18.yaml configs/r34.yaml         # one job per config
    python scripts/slurm/submit.py configs/recipes/cifar.yaml --grid model.net.init_args.depth=20,32,44,56
    python scripts/slurm/submit.py configs/recipes  # a group: every *.yaml of a folder
    python scripts/slurm/submit.py configs/r50.yaml --grid model.lr=0.1,0.05 --grid model.weight_decay=1e-4,5e-5
    python scripts/slurm/submit.py configs/r50.yaml --nodes 4 --gpus-per-node 8 --partition preempt --time 12:00:00
    python scripts/slurm/submit.py configs/r50.yaml --dry-run -- --trainer.max_epochs 90

Arguments after ``--`` go to ``python -m src.cli fit``. Every job runs from the current directory (the
repo root), writes its SLURM log to runs/slurm/<job name>-<job id>.out, and its run to
runs/<name>/slurm-<job id>/ where a requeued job resumes by itself (docs/slurm.md). A ``--grid`` of
several points is one job array, one task per point: task i logs to <job name>-<job id>_<i>.out, trains
in runs/<name>/slurm-<job id>_<i>/, and is preempted and requeued on its own.
"""

import argparse
import itertools
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

TEMPLATE = Path(__file__).with_name("train.sbatch")


def expand_configs(paths: list[str]) -> list[tuple[Path, str | None]]:
    """(config, wandb group) per job: a directory is an experiment group of its ``*.yaml`` files."""
    jobs: list[tuple[Path, str | None]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(path.glob("*.yaml"))
            if not files:
                raise SystemExit(f"error: experiment group {path} holds no *.yaml configs")
            jobs += [(f, path.name) for f in files]
        elif path.is_file():
            jobs.append((path, None))
        else:
            raise SystemExit(f"error: config {path} does not exist")
    return jobs


def expand_grid(grid: list[str]) -> list[list[tuple[str, str]]]:
    """``["model.lr=0.1,0.05", "a=1"]`` -> every combination, as (key, value) lists."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise SystemExit(f"error: --grid {item!r} is not KEY=V1,V2,...")
        axes.append([(key, v) for v in values.split(",")])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def point_name(point: list[tuple[str, str]]) -> str:
    """``[("model.lr", "0.1"), ("model.weight_decay", "1e-4")]`` -> ``lr0.1-weight_decay1e-4``."""
    return "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in point)


def sbatch_command(
    args: argparse.Namespace, config: Path, group: str | None, points: list[list[tuple[str, str]]]
) -> tuple[list[str], list[str]]:
    """The sbatch command for one config, and the per-task arguments when its grid makes it a job array.

    Several grid points become one job array (``--array=0-N``): each task reads its own line of
    arguments (``RESNET_ARRAY_ARGS``), trains in its own run directory ``runs/<name>/slurm-<job>_<task>``,
    and is preempted and requeued on its own.
    """
    array = len(points) > 1
    name = config.stem if array else "-".join(p for p in (config.stem, point_name(points[0])) if p)
    log = f"{args.log_dir}/%x-%A_%a.out" if array else f"{args.log_dir}/%x-%j.out"
    cmd = ["sbatch", "--parsable", f"--job-name={name}", f"--output={log}"]
    for flag in ("nodes", "cpus_per_task", "time", "partition", "account", "qos"):
        value = getattr(args, flag)
        if value is not None:
            cmd.append(f"--{flag.replace('_', '-')}={value}")
    if args.gpus_per_node is not None:
        cmd.append(f"--gres=gpu:{args.gpus_per_node}" if args.gpus_per_node > 0 else "--gres=none")
    tasks = args.ntasks_per_node or args.gpus_per_node
    if tasks:
        cmd.append(f"--ntasks-per-node={tasks}")
    # A task's line holds its point, then the arguments after `--`: the same order, so the same precedence,
    # as a single job's command line.
    task_args = [
        shlex.join([*(arg for key, value in point for arg in (f"--{key}", value)), *args.cli_args]) for point in points
    ]
    if array:
        cmd.append(f"--array=0-{len(points) - 1}")
    cmd += args.sbatch_arg or []
    cmd += [str(args.template)]
    for base in args.base or []:
        cmd += ["-c", base]
    cmd += ["-c", str(config)]
    wandb_group = args.group or group
    if wandb_group:
        cmd += ["--wandb.group", str(wandb_group)]
    if not array:
        return cmd + shlex.split(task_args[0]), []
    return cmd, task_args


def main(argv: list[str] | None = None) -> list[str]:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="config files, or directories (experiment groups)")
    parser.add_argument("--base", action="append", help="config composed before each job's config (repeatable)")
    parser.add_argument("--grid", action="append", default=[], help="KEY=V1,V2: one job per value (repeatable)")
    parser.add_argument("--group", help="W&B group of all jobs (default: the directory name of a group)")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--gpus-per-node", type=int, help="sets --gres=gpu:N and --ntasks-per-node=N; 0 = CPU")
    parser.add_argument("--ntasks-per-node", type=int, help="processes per node (default: --gpus-per-node)")
    parser.add_argument("--cpus-per-task", type=int)
    parser.add_argument("--time")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--qos")
    parser.add_argument("--sbatch-arg", action="append", help="any other sbatch flag, e.g. --sbatch-arg=--exclusive")
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="the sbatch script")
    parser.add_argument("--log-dir", default="runs/slurm", help="where the SLURM stdout/stderr files go")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch commands, submit nothing")
    args = parser.parse_args(argv)
    args.cli_args = cli_args

    commands = [
        sbatch_command(args, config, group, expand_grid(args.grid)) for config, group in expand_configs(args.configs)
    ]
    job_ids = []
    for cmd, task_args in commands:
        if args.dry_run:
            print(shlex.join(cmd))
            for i, line in enumerate(task_args):
                print(f"  array task {i}: {line}")
            continue
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)  # SLURM does not create it
        env = None
        if task_args:  # a job array: task i appends line i+1 of this file to its arguments
            name = cmd[2].removeprefix("--job-name=")
            args_file = Path(args.log_dir).resolve() / f"{name}-{len(task_args)}tasks-{time.time_ns()}.args"
            args_file.write_text("\n".join(task_args) + "\n")
            env = {**os.environ, "RESNET_ARRAY_ARGS": str(args_file)}
            # Named explicitly: a site's SBATCH_EXPORT=NONE would otherwise drop it from every task.
            cmd.insert(cmd.index(str(args.template)), f"--export=ALL,RESNET_ARRAY_ARGS={args_file}")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        if out.returncode != 0:
            raise SystemExit(f"error: {shlex.join(cmd)}\n{out.stderr.strip()}")
        job_ids.append(out.stdout.strip().split(";")[0])
        print(f"{job_ids[-1]}\t{shlex.join(cmd[cmd.index(str(args.template)) + 1 :])}")
        for i, line in enumerate(task_args):
            print(f"{job_ids[-1]}_{i}\t{line}")
    return job_ids


if __name__ == "__main__":
    main()
