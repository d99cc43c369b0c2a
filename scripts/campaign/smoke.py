"""Stage smoke: the real CLI on the device: fit + test at three precisions, channels_last, compile,
on_device data, resume from last.ckpt, 10-crop test and predict; the items run in parallel."""

import math
from pathlib import Path
from typing import Any

from scripts.campaign.common import Box, Context, StageResult, read_run
from scripts.runner import Result, child_env, run_many
from src.markdown import markdown_table

# Twice what a loaded 2-core machine took in --quick (130 s, each process spending ~20 s importing torch).
BOX = Box(gpu=75, quick=300, min_gpu=30, min_quick=30)


def items(ctx: Context) -> dict[str, list[list[str]]]:
    """Each item: one or more CLI calls (run in order)."""
    root = ctx.work / "smoke"
    common = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *ctx.gpu_args]

    def logger(name: str) -> list[str]:
        return [f"--trainer.default_root_dir={root}", f"--name={name}"]

    synthetic = ["fit", "-c", "configs/quickstart.yaml", "--data=src.data.synthetic.SyntheticDataModule"]
    synthetic += ["--data.num_classes=10", "--data.in_channels=3", f"--data.image_size={16 if ctx.quick else 32}"]
    synthetic += ["--data.train_size=256", "--data.val_size=64", "--data.batch_size=32", "--trainer.max_epochs=2"]
    synthetic += common
    # On a CPU Lightning runs 16-mixed as bf16-mixed: --quick runs that once
    precisions = ("32-true", "bf16-mixed") if ctx.quick else ("32-true", "bf16-mixed", "16-mixed")
    out = {f"fit+test {p}": [[*synthetic, f"--trainer.precision={p}", *logger(p)]] for p in precisions}
    bf16_cl = [*synthetic, "--trainer.precision=bf16-mixed", "--model.channels_last=true"]
    out["channels_last"] = [[*bf16_cl, *logger("channels_last")]]
    if not ctx.quick:  # inductor's C++ compile of a net takes minutes on 2 cores; tests/test_scale.py covers it
        out["compile"] = [[*bf16_cl, "--model.compile=true", *logger("compile")]]
    fmnist = ["fit", "-c", "configs/quickstart.yaml", f"--data.init_args.data_dir={ctx.data_dir}", *common]
    limits = ["--trainer.limit_train_batches=20", "--trainer.limit_val_batches=5", "--trainer.limit_test_batches=5"]
    on_device = ["--data.init_args.on_device=true", "--trainer.precision=bf16-mixed", "--trainer.max_epochs=1"]
    out["on_device"] = [[*fmnist, *on_device, *limits, *logger("on_device")]]
    resume = [*synthetic, f"--run_dir={root / 'resume'}", "--test_after_fit=false", *logger("resume")]
    out["resume from last.ckpt"] = [[*resume, "--trainer.max_epochs=1"], [*resume, "--trainer.max_epochs=2"]]
    imagenet = write_imagefolder(root / "imagenet-tiny")
    tencrop = ["-c", "configs/r18.yaml", f"--data.init_args.data_dir={imagenet}", "--data.init_args.batch_size=4"]
    tencrop += [
        "--data.init_args.crop_size=32",
        "--data.init_args.eval_resize=40",
        "--data.init_args.scale_range=[40, 48]",
    ]
    tencrop += ["--data.init_args.ten_crop_test=true", "--data.init_args.num_workers=2"]
    tencrop += [
        "--data.init_args.global_batch_size=null",
        "--data.init_args.val_size=3",
        *common,
    ]  # 3 of 12 train images
    predict = root / "predict"
    out["predict 10-crop"] = [
        ["fit", *tencrop, "--trainer.max_epochs=1", f"--run_dir={predict}", *logger("predict")],
        ["predict", *tencrop, f"--run_dir={predict}", f"--ckpt_path={predict / 'checkpoints' / 'last.ckpt'}"],
    ]
    return out


def write_imagefolder(root: Path) -> Path:
    """A tiny ImageFolder tree of real JPEGs (3 classes, 4 train + 2 val images each)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in ("n01440764", "n01443537", "n01484850"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for j in range(n):
                pixels = rng.integers(0, 256, size=(48 + 8 * j, 64, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{c}_{j}.JPEG", quality=90)
    return root


def check(name: str, root: Path, result: Result) -> str:
    """'' when the item's runs did what they should, else why not."""
    if result.rc:
        return "timed out" if result.rc == 124 else f"exit {result.rc}"
    if name.startswith("fit+test") or name in ("channels_last", "compile", "on_device"):
        folder = root / name.split()[-1]
        run = read_run(folder)
        if run is None or run.last("test/acc1") is None:
            return f"no test/acc1 in {folder}/*/metrics.csv"
        return "" if math.isfinite(run.last("train/loss_epoch") or math.nan) else "no finite train/loss_epoch"
    if name.startswith("resume"):
        if "Resuming from" not in result.output(-1):
            return "the second fit did not resume from the run directory"
        import torch

        ckpt = torch.load(root / "resume" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        return "" if ckpt["epoch"] == 1 else f"last.ckpt is at epoch {ckpt['epoch']}, expected 1 (the second of two)"
    if name.startswith("predict"):  # the fit's own test ran 10-crop; then predict restored the checkpoint
        run = read_run(root / "predict")
        if run is None or run.last("test/acc1") is None:
            return "the 10-crop test after fit logged no test/acc1"
        return "" if "Loaded model weights from the checkpoint" in result.output(-1) else "predict loaded no checkpoint"
    return ""


def run(ctx: Context) -> StageResult:
    root, chains = ctx.work / "smoke", items(ctx)
    env = child_env(1 if ctx.quick else 2)
    results = run_many(chains, 2 if ctx.quick else len(chains), root / "logs", env=env, deadline=ctx.deadline - 3)
    data: dict[str, Any] = {}
    for r in results:
        why = check(r.name, root, r)
        data[r.name] = {"pass": not why, "seconds": r.seconds, "why": why, "tail": r.output()[-2500:] if why else ""}
    rows = [[n, "pass" if d["pass"] else "FAIL: " + d["why"], f"{d['seconds']:.0f}"] for n, d in data.items()]
    md = [markdown_table(["item", "result", "seconds"], rows, numeric=[2])]
    for name, d in data.items():
        if not d["pass"]:
            md += ["", f"<details><summary>{name}: output tail</summary>", "", "```", d["tail"], "```", "</details>"]
    failed = [n for n, d in data.items() if not d["pass"]]
    return {"items": data, "failures": [f"smoke item {n}: {data[n]['why']}" for n in failed]}, md
