"""Stage graphs: Fashion-MNIST ResNet-20 time to 93% official test accuracy (the tta stage's recipe), eager
and with CUDA graphs (``model.compile_mode=reduce-overhead``: forward and backward captured, evaluation
eager), each run's curve in the raw results. In --quick (CPU) the graphs run must stop at its start with
the one-line config error (exit 2): CUDA graphs need a CUDA device."""

from typing import Any

from scripts import metrics
from scripts.campaign import tta
from scripts.campaign.common import Box, Context, StageResult, epoch_table, pct, read_run, tail
from scripts.runner import child_env, cli, run_one
from src.markdown import markdown_table

BOX = Box(gpu=200, quick=170, min_gpu=90, min_quick=60)
QUICK_ERROR_S = 60.0  # --quick: what the graphs run's start and config error take (the eager run gets the rest)
VARIANTS = {
    "eager": [],
    "graphs": ["--model.compile=true", "--model.compile_mode=reduce-overhead"],
}
CPU_ERROR = "error: model.compile_mode='reduce-overhead' captures CUDA graphs"


def run(ctx: Context) -> StageResult:
    epochs = 2 if ctx.quick else 20
    result: dict[str, Any] = {"failures": []}
    rows = []
    for i, (name, extra) in enumerate(VARIANTS.items()):
        group = f"graphs-{name}"
        share = ctx.left() / (len(VARIANTS) - i)
        if ctx.quick:
            share = ctx.left() - QUICK_ERROR_S if name == "eager" else ctx.left()
        max_time = int(max(10, share - tta.STARTUP_S - 10))
        cmd = tta.args(ctx, epochs, max_time, group, extra)
        log = ctx.work / group / f"{group}.log"
        budget = share - 2
        rc = run_one(cli(*cmd), log, budget, child_env(4))
        if ctx.quick and name == "graphs":
            # On the CPU: the documented config error, before any training
            ok = rc == 2 and CPU_ERROR in tail(log)
            result[name] = {"rc": rc, "config_error": ok}
            if not ok:
                result["failures"].append(f"graphs on CPU: expected exit 2 and '{CPU_ERROR}', got exit {rc}")
            rows.append([name, "config error on CPU (exit 2)" if ok else f"exit {rc}", "", "", ""])
            continue
        run = read_run(ctx.work / group)
        if run is None or not metrics.epochs(run):
            result["failures"].append(f"{name}: no epoch logged (exit {rc}); see {log}")
            rows.append([name, f"exit {rc}, nothing logged", "", "", ""])
            continue
        curve, reached = tta.time_to_target(run)
        rates = [r for _, r in run.series("perf/images_per_s")]
        result[name] = {"rc": rc, "seconds_to_target": reached, "curve": curve, "epochs": epoch_table(run)}
        result[name] |= {"images_per_s": rates, "final_test_acc": curve[-1]["test_acc1"], "max_time_s": max_time}
        shown_rate = f"{max(rates):,.0f}" if rates else "–"
        target = f"{reached:.1f}" if reached is not None else "not reached"
        rows.append([name, target, pct(curve[-1]["test_acc1"]), str(metrics.progress(run)), shown_rate])
    md = [
        f"Fashion-MNIST ResNet-20, the tta stage's recipe ({epochs} epochs planned, each run cut by max_time), "
        "eager and with `--model.compile=true --model.compile_mode=reduce-overhead`.",
        "",
        markdown_table(
            ["run", f"seconds to {tta.TARGET_ACC:.0f}%", "final test top-1 (%)", "epochs", "best images/s"], rows
        ),
    ]
    return result, md
