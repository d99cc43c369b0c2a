"""Stage repro: the degradation grid (plain/ResNet 20-56) and the five unit orderings, 2 seeds each, packed
onto the one device, every run the same number of epochs, sized so that all of them finish in the box.

The epoch count comes from an epoch time measured in this stage: a short calibration launches the runs as
they will run (on the GPU all at once), each for a few steps, and times their packed steps and their start.
Every run then gets the same epochs, so the nets compare at equal steps; ``max_time`` stays as a backstop,
and a run it cuts is reported as cut, with the steps it trained. The comparison reads the train error at the
last epoch that every run of the table completed. Every run's per-epoch metrics go to results.json.
"""

import math
import statistics
import time
from pathlib import Path
from typing import Any

from scripts import metrics, report
from scripts.campaign.common import Box, Context, StageResult, epoch_table, fmnist_run, read_run
from scripts.runner import child_env, run_many
from src.markdown import markdown_table, spread

BOX = Box(gpu=0, quick=0, min_gpu=60, min_quick=30)
SEEDS = (0, 1)
# Batch 256 at lr 0.2 (the papers' 0.1 at 128, scaled linearly: Goyal et al. 2017): the small nets are
# bound by kernel launches, so half the steps per epoch buys about twice the epochs in the budget.
BATCH = 256
CALIBRATION_STEPS = 30  # enough to average over cuDNN's autotuning in the first steps
VAL_SHARE = 0.1  # validation and epoch-end work, as a share of an epoch's training time
TEST_EPOCHS = 0.3  # the final test (10k images, forward only) and teardown, in epochs
MARGIN = 0.85  # plan for this share of the time left: overrunning costs the whole stage
REPORTS_S = 20.0  # the two reports at the end


def configurations(quick: bool) -> list[tuple[str, str, list[str]]]:
    """(experiment, run name, CLI overrides) of the degradation grid and the unit orderings."""
    from scripts.experiments import degradation, units

    grid = [("degradation", r.name, r.overrides) for r in degradation.runs((8,) if quick else degradation.DEPTHS)]
    unit_runs = units.runs(8 if quick else 20, None)
    if quick:
        unit_runs = [r for r in unit_runs if r.name.endswith("full_preact")]  # r8-full_preact
    return grid + [("units", r.name, r.overrides) for r in unit_runs]


def relative_cost(overrides: list[str]) -> float:
    """Compute of a run relative to ResNet-20: its number of residual blocks over 9."""
    for o in overrides:
        if o.startswith("--model.net.init_args.depth="):
            return (int(o.split("=", 1)[1]) - 2) / 2 / 9  # 6n+2 basic: 3n blocks
    return 1.0


def commands(ctx: Context, root: Path, epochs: int | None, extra: list[str]) -> dict[str, tuple[str, float, list[str]]]:
    """{run: (experiment, relative cost, fit arguments)} for every configuration and seed."""
    out = {}
    for experiment, name, overrides in configurations(ctx.quick):
        for seed in SEEDS:
            run = f"{name}-s{seed}"
            args = fmnist_run(ctx, run, experiment, root / experiment, overrides, epochs)
            args += [f"--data.init_args.batch_size={BATCH}", "--model.lr_scaling=linear", "--model.base_batch_size=128"]
            args += [f"--data.init_args.seed={seed}", f"--seed_everything={seed}", *ctx.gpu_args]
            if not ctx.quick:
                args += ["--trainer.precision=bf16-mixed", "--model.channels_last=true"]
            out[run] = (experiment, relative_cost(overrides), [*args, *extra])
    return out


def calibrate(ctx: Context, jobs: int) -> dict[str, Any]:
    """Packed seconds per step per unit of cost, steps per epoch and start-up seconds, measured on the runs
    as they will run. On the GPU all of them at once; in --quick one (2 cores run them one by one anyway)."""
    root = ctx.work / "repro-calibration"
    cmds = commands(ctx, root, None, [f"--trainer.max_steps={CALIBRATION_STEPS if not ctx.quick else 2}"])
    if ctx.quick:
        cmds = dict(list(cmds.items())[:1])
    env = child_env(1, WANDB_MODE="disabled")
    deadline = time.time() + 0.4 * ctx.left()  # a calibration that takes longer leaves the runs too little
    results = run_many({r: [c[2]] for r, c in cmds.items()}, jobs, root / "logs", env=env, deadline=deadline)
    step_per_cost, startup, per_epoch = [], [], []
    for r in results:
        run = read_run(root / cmds[r.name][0] / r.name)
        eps = metrics.epochs(run) if run else []
        if run is None or r.rc or not eps or not eps[0].get("perf/images_per_s"):
            continue
        step_s = BATCH / (eps[0].get("perf/images_per_s") or math.nan)
        step_per_cost.append(step_s / cmds[r.name][1])
        startup.append(r.seconds - (eps[0].get("perf/epoch_s") or 0.0))
        per_epoch.append(metrics.steps_per_epoch(run) or 0)
    if not step_per_cost:
        raise RuntimeError(f"no calibration run trained; see {root / 'logs'}")
    return {
        "runs": len(results),
        "step_s_per_cost": statistics.median(step_per_cost),
        "startup_s": max(startup),
        "steps_per_epoch": max(per_epoch),
    }


def plan(ctx: Context, n_runs: int, jobs: int, costs: list[float]) -> dict[str, Any]:
    """Epochs for every run and the max_time backstop, from the calibration (or --repro-epochs)."""
    cal = calibrate(ctx, jobs) if not ctx.repro_epochs else {}
    waves = math.ceil(n_runs / jobs)
    per_run = (ctx.left() - REPORTS_S) / waves  # each wave of runs gets an equal share of what is left
    startup = cal.get("startup_s", 30.0)
    epoch_s = max(costs) * cal["step_s_per_cost"] * cal["steps_per_epoch"] * (1 + VAL_SHARE) if cal else None
    train_s = per_run - startup - (TEST_EPOCHS * epoch_s if epoch_s else 10.0)
    if ctx.repro_epochs:
        epochs = ctx.repro_epochs
    elif ctx.quick:  # --quick trains 2 batches of one epoch (the experiments' --quick): the path, not a result
        epochs = 1
    else:
        epochs = max(1, min(30, int(MARGIN * train_s / epoch_s))) if epoch_s else 1
    return {
        "calibration": cal,
        "waves": waves,
        "predicted_epoch_s": epoch_s,  # of the costliest net, packed
        "epochs": epochs,
        "max_time_s": int(max(10.0, train_s)),  # fit seconds per run; the plan leaves 1 - MARGIN of it spare
    }


def run(ctx: Context) -> StageResult:
    root = ctx.work / "repro"
    costs = [c[1] for c in commands(ctx, root, None, []).values()]
    jobs = 3 if ctx.quick else len(costs)
    p = plan(ctx, len(costs), jobs, costs)
    limit = p["max_time_s"]
    cmds = commands(ctx, root, p["epochs"], [f"--trainer.max_time=00:00:{limit // 60:02d}:{limit % 60:02d}"])
    # CSV is the record: W&B's service per run would cost the packed runs CPU for nothing
    env = child_env(1, WANDB_MODE="disabled")
    results = run_many({r: [c[2]] for r, c in cmds.items()}, jobs, root / "logs", env=env, deadline=ctx.deadline - 15)
    table: dict[str, dict[str, Any]] = {}
    for r in results:
        experiment = cmds[r.name][0]
        run = read_run(root / experiment / r.name)
        done = metrics.progress(run) if run else None
        table[r.name] = {"experiment": experiment, "rc": r.rc, "seconds": r.seconds, "epochs_done": str(done)}
        table[r.name] |= {"steps": done.steps if done else 0, "cut": bool(done and done.cut_steps)}
        table[r.name] |= {"complete_epochs": done.complete if done else 0, "epochs": epoch_table(run) if run else []}
        table[r.name]["test_err"] = run.last(metrics.ERR_TEST) if run else None
    reports = {}
    for experiment in sorted({c[0] for c in cmds.values()}):
        title = f"{experiment} (GPU campaign, Fashion-MNIST)"
        args = [str(root / experiment), "--out", str(root / f"report-{experiment}"), "--title", title, "--x", "epoch"]
        try:  # in this process: a child would spend seconds importing what this one has already
            report.main(args)
            reports[experiment] = True
        except SystemExit as err:
            reports[experiment] = False
            print(f"report of {experiment} failed: {err}", flush=True)
    result = {**p, "seeds": list(SEEDS), "batch": BATCH, "runs": table, "reports": reports}
    return result, markdown(result)


def markdown(r: dict[str, Any]) -> list[str]:
    runs = r["runs"]
    failed = [k for k, v in runs.items() if v["rc"] != 0]
    cut = [f"{k} ({v['epochs_done']})" for k, v in runs.items() if v["cut"]]
    # the last epoch every run completed: the nets compare at equal steps there
    common = min((v["complete_epochs"] for v in runs.values()), default=0)
    measured = [e["perf/epoch_s"] for v in runs.values() for e in v["epochs"] if e["complete"] and "perf/epoch_s" in e]
    cal, pred = r["calibration"], r["predicted_epoch_s"]
    md = [
        f"{len(runs)} runs, {r['waves']} wave(s) on the one device: {r['epochs']} epochs of Fashion-MNIST each "
        f"(batch {r['batch']}, lr /10 at 50% and 75%), seeds {', '.join(map(str, r['seeds']))} (init, order, "
        f"augmentation). Epochs from a calibration of {cal.get('runs', 0)} packed run(s): "
        f"{cal.get('steps_per_epoch', '–')} steps per epoch, predicted packed epoch of the costliest net "
        f"{f'{pred:.1f} s' if pred else '–'}, measured median epoch "
        f"{f'{statistics.median(measured):.1f} s' if measured else '–'}. Backstop: max_time {r['max_time_s']} s.",
    ]
    if failed:
        md.append(f"**Failed runs:** {', '.join(failed)} (logs in the archive, repro/logs/).")
    if cut:
        md.append(f"**Cut by max_time (epochs done + steps of the cut epoch):** {', '.join(cut)}.")
    rows = []
    for config in sorted({k.rsplit("-s", 1)[0] for k in runs}):
        seeds = [v for k, v in runs.items() if k.rsplit("-s", 1)[0] == config]
        train = [e["train/err1"] for v in seeds for e in v["epochs"] if e["epoch"] == common - 1 and "train/err1" in e]
        test = [v["test_err"] for v in seeds if v["test_err"] is not None]
        rows.append([config, ", ".join(v["epochs_done"] for v in seeds), spread(train), spread(test)])
    header = ["configuration", "epochs per seed", f"train err (%) at epoch {common}, all runs", "test err (%)"]
    return [*md, "", "Cells: mean ± std (min-max) over the seeds.", "", markdown_table(header, rows, [2, 3])]
