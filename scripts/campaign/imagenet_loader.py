"""Stage imagenet_loader: the ImageNet train loader on this machine's cores, on ImageNet-like JPEGs written here
(src/data/jpeg_fixture.py): images/s of the fast pipeline per worker count, then ResNet-50 ``fit`` fed by it
beside the same fit on synthetic data on the device (the ceiling), interleaved, with an A/A floor."""

import os
import statistics
import time
from typing import Any

from scripts.campaign.common import Box, Context, StageResult
from src.markdown import markdown_table

BOX = Box(gpu=170, quick=150, min_gpu=60, min_quick=30)


def run(ctx: Context) -> StageResult:
    import torch

    from scripts import bench
    from scripts.bench_data import LoaderMeasure
    from src.data.imagenet import ImageNetDataModule, workers_per_process
    from src.data.jpeg_fixture import write_tree
    from src.data.synthetic import SyntheticDataModule
    from src.models import resnet as R

    device = bench.setup_torch()
    cores = len(os.sched_getaffinity(0))
    root = ctx.work / "imagenet-jpegs"
    t0 = time.perf_counter()
    fixture = write_tree(root, *((2, 16, 1) if ctx.quick else (10, 120, 1)))
    fixture["write_s"] = round(time.perf_counter() - t0, 1)
    # --quick: the stage's path at CPU cost (32-pixel crops, ResNet-18, the fit's loader in the main process)
    image, batch, window, repeats = (32, 8, 0.3, 2) if ctx.quick else (224, 256, 3.0, 3)
    size = {"crop_size": image, "scale_range": (36, 48), "eval_resize": 36} if ctx.quick else {}
    default_workers = 0 if ctx.quick else workers_per_process(1)

    def loader_data(workers: int) -> ImageNetDataModule:
        dm = ImageNetDataModule(data_dir=str(root), batch_size=batch, val_size=0, num_workers=workers, **size)  # type: ignore[arg-type]
        dm.setup("fit")
        return dm

    counts = [1] if ctx.quick else sorted({1, 2, 4, 8, default_workers})
    loader_ips: dict[str, list[float]] = {}
    for w in counts:
        if ctx.left() < (20 if ctx.quick else 90):
            break
        measure = LoaderMeasure(loader_data(w).train_dataloader(), False, window, batch)
        loader_ips[str(w)] = bench.interleaved(repeats, {"m": measure}, 1, 0)["m"]
        del measure
    s = bench.Setting("32-true" if ctx.quick else "bf16-mixed", channels_last=True)
    build = R.resnet18 if ctx.quick else R.resnet50
    synthetic = SyntheticDataModule(
        num_classes=10, image_size=image, batch_size=batch, train_size=batch * 16, on_device=True
    )
    fits = {
        "synthetic on device": bench.LightningFit(build(num_classes=10), synthetic, s, ctx.accel),
        "synthetic on device (A/A)": bench.LightningFit(build(num_classes=10), synthetic, s, ctx.accel),
        f"JPEGs, fast loader, {default_workers} workers": bench.LightningFit(
            build(num_classes=10), loader_data(default_workers), s, ctx.accel
        ),
    }
    steps = 2 if ctx.quick else 8  # the fixture's epoch: 1,200 images, 4 steps of 256; the fit cycles it
    ips = bench.interleaved(repeats, fits, 2, steps)  # type: ignore[arg-type]
    floor = bench.aa_floor(ips["synthetic on device"], ips["synthetic on device (A/A)"])
    real = next(k for k in ips if k.startswith("JPEGs"))
    verdict = bench.compare(ips[real], ips["synthetic on device"], floor)
    result: dict[str, Any] = {"cores": cores, "fixture": fixture, "batch": batch, "image": image}
    result |= {"loader_ips": loader_ips, "fit_ips": ips, "aa_floor": floor, "real/synthetic": verdict}
    result["real/synthetic median"] = statistics.median(bench.ratios(ips[real], ips["synthetic on device"]))
    result["gpu_decode"] = "not built: the loader decodes on the CPU only"
    name = "ResNet-18 (quick)" if ctx.quick else "ResNet-50"
    md = [
        f"{cores} usable CPU cores. Fixture: {fixture['images']} JPEGs ({fixture['source']}, {fixture['mean_kb']:.0f} "
        f"KB on average), written in {fixture['write_s']} s. Fast train pipeline, `train_crop: scale`, batch {batch}, "
        f"{image}x{image}; loader only, windows of about {window:g} s, {repeats} repeats:",
        "",
        markdown_table(
            ["workers", "images/s, median (min-max)"], [[w, bench.fmt_stat(v)] for w, v in loader_ips.items()], [0, 1]
        ),
        "",
        f"{name} `fit` ({s.label}), windows of {steps} steps after 2, {repeats} repeats interleaved; A/A floor "
        f"(synthetic fit built twice): ±{100 * floor:.1f}%:",
        "",
        markdown_table(["data", "images/s, median (min-max)"], [[k, bench.fmt_stat(v)] for k, v in ips.items()], [1]),
        "",
        f"JPEGs / synthetic: {verdict}. GPU decode: {result['gpu_decode']}.",
    ]
    torch.cuda.empty_cache() if device.type == "cuda" else None
    return result, md
