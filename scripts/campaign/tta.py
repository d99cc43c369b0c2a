"""Stage tta: time to 93% official test accuracy, Fashion-MNIST ResNet-20 made fast (data on the device,
bf16 + channels_last, batch 256 at the linearly scaled lr 0.2, 200 warm-up steps, cosine schedule)."""

from typing import Any

from scripts import metrics
from scripts.campaign.common import Box, Context, StageResult, epoch_table, fmnist_run, pct, read_run, tail
from scripts.runner import child_env, cli, run_one
from src.markdown import markdown_table

BOX = Box(gpu=100, quick=90, min_gpu=30, min_quick=20)
TARGET_ACC = 93.0  # % on Fashion-MNIST's official test set
COMPLETE = {True: "yes", False: "cut", None: "?"}
STARTUP_S = 25.0  # imports, data and the device before the first step (measured ~20 s there)


def args(ctx: Context, epochs: int, max_time: int, group: str = "tta", extra: list[str] | None = None) -> list[str]:
    out = fmnist_run(ctx, "r20", group, ctx.work / group, extra or [], None)
    out += [
        "--data.init_args.val_size=0",  # train on all 60k and validate on the official test split: the curve
        "--data.init_args.batch_size=256",
        "--model.lr_scaling=linear",
        "--model.base_batch_size=128",
        "--model.schedule=cosine",
        "--model.warmup_steps=200",
        f"--trainer.max_epochs={epochs}",
        # ends the run itself before the box, so that what it trained is logged (the box kills it otherwise)
        f"--trainer.max_time=00:00:{max_time // 60:02d}:{max_time % 60:02d}",
        "--test_after_fit=false",  # every epoch is validated on the test split already
    ]
    if ctx.quick:
        return [*out, "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]
    return [*out, "--trainer.precision=bf16-mixed", "--model.channels_last=true", *ctx.gpu_args]


def time_to_target(run: metrics.Run) -> tuple[list[dict[str, Any]], float | None]:
    """The test accuracy curve over training seconds (sum of ``perf/epoch_s``), and the seconds at the first
    epoch at or above the target (None if never)."""
    elapsed, reached = 0.0, None
    curve: list[dict[str, Any]] = []
    for e in metrics.epochs(run):
        elapsed += e.get("perf/epoch_s") or 0.0
        acc = e.get("val/acc1")
        curve.append({"epoch": e.index, "steps": e.steps, "complete": e.complete, "seconds": round(elapsed, 2)})
        curve[-1]["test_acc1"] = acc
        if reached is None and acc is not None and acc >= TARGET_ACC:
            reached = elapsed
    return curve, reached


def run(ctx: Context) -> StageResult:
    root = ctx.work / "tta"
    epochs = 2 if ctx.quick else 20  # two in --quick: the curve's path over more than one epoch
    max_time = int(max(10, ctx.left() - STARTUP_S - 10))
    cmd = args(ctx, epochs, max_time)
    rc = run_one(cli(*cmd), root / "tta.log", ctx.left() - 5, child_env(4))
    run = read_run(root)
    if run is None or not metrics.epochs(run):
        raise RuntimeError(
            f"the tta run logged no epoch (exit {rc}); see {root / 'tta.log'}:\n" + tail(root / "tta.log")
        )
    curve, reached = time_to_target(run)
    done = metrics.progress(run)
    rates = [r for _, r in run.series("perf/images_per_s")]
    result: dict[str, Any] = {"rc": rc, "epochs_planned": epochs, "max_time_s": max_time, "epochs_done": str(done)}
    result |= {"seconds_to_target": reached, "final_test_acc": curve[-1]["test_acc1"], "images_per_s": rates}
    result |= {"curve": curve, "epochs": epoch_table(run)}
    target = f"{reached:.1f} s" if reached is not None else f"not reached in {done} epochs"
    if done and done.cut_steps:
        target += f" (max_time cut the run after {done} of {epochs} epochs)"
    shown = " ".join(["python -m src.cli", *cmd]).replace(str(ctx.work), "WORK").replace(str(ctx.data_dir), "DATA")
    md = [
        f"`{shown}`",
        "",
        f"- training seconds to {TARGET_ACC:.0f}% official test accuracy (sum of `perf/epoch_s`, i.e. training "
        f"plus the per-epoch test pass, until the first epoch at or above {TARGET_ACC:.0f}%): **{target}**",
        f"- test accuracy at the end: **{pct(curve[-1]['test_acc1'])}%** after {done} epochs (exit {rc})",
    ]
    if rates:
        shown_rates = ", ".join(f"{r:,.0f}" for r in rates)
        md.append(f"- training images/s per epoch: {shown_rates} (the first includes cuDNN autotuning)")
    header = ["epoch", "steps so far", "complete", "seconds so far", "test top-1 (%)"]
    rows = [
        [c["epoch"] + 1, c["steps"], COMPLETE[c["complete"]], f"{c['seconds']:.1f}", pct(c["test_acc1"])] for c in curve
    ]
    md += ["", markdown_table(header, rows, [0, 1, 3, 4])]
    return result, md
