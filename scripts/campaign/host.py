"""Stage host: the per-step cost of our fit on the GPU. Lightning fit / bare loop on ResNet-50 (bf16 +
channels_last), eager and compiled (the fit compiles through ``model.compile``), with an A/A floor; then
compile cold and warm: the first step of a compiled fit in a fresh process with an empty compile cache,
then in another with the cache the first left (what a requeued segment sees). --quick: CIFAR ResNet-8 and
aot_eager (graph capture without code generation, the stage's path at CPU cost), no cold/warm pair (CPU
inductor takes minutes per cold compile: scripts/bench_host.py --compile measures it)."""

import functools
import os
from typing import Any

from scripts.campaign.common import Box, Context, StageResult
from src.markdown import markdown_table

BOX = Box(gpu=420, quick=150, min_gpu=240, min_quick=30, reserve=False)


def run(ctx: Context) -> StageResult:
    from scripts import bench, bench_host
    from src.data.synthetic import SyntheticDataModule
    from src.models import resnet as R

    # The compiled fits' cache in the work directory (inductor's default is node-local /tmp)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(ctx.work / "compile_cache")
    device = bench.setup_torch()
    image, batch = (32, 8) if ctx.quick else (224, ctx.earlier("throughput").get("batch", 256))
    build = (lambda: R.cifar_resnet(8, num_classes=1000)) if ctx.quick else R.resnet50
    precision = "32-true" if ctx.quick else "bf16-mixed"
    backend = "aot_eager" if ctx.quick else "inductor"
    data = SyntheticDataModule(
        num_classes=1000, image_size=image, batch_size=batch, train_size=batch * 8, on_device=True
    )
    result: dict[str, Any] = {"batch": batch, "image": image, "backend": backend}
    rows = []
    for compiled in (False, True):
        s = bench.Setting(precision, channels_last=True, compile=compiled)
        loops = [bench.BareLoop(build(), bench.device_batches(data, device), s, device, batch, backend) for _ in "ab"]
        fit = bench.LightningFit(build(), data, s, ctx.accel)
        if compiled and backend != "inductor":
            fit.model.net.compile = functools.partial(fit.model.net.compile, backend=backend)  # type: ignore[method-assign]
        steps = bench.steps_for(loops[0].step_time(3), 0.3 if ctx.quick else 1.5)
        fit(3, 2)  # compiles (or autotunes) once, outside the measurements
        fns: dict[str, bench.Measure] = {"bare": loops[0], "bare (A/A)": loops[1], "fit": fit}
        ips = bench.interleaved(2 if ctx.quick else 5, fns, 3, steps)
        floor = bench.aa_floor(ips["bare"], ips["bare (A/A)"])
        verdict = bench.compare(ips["fit"], ips["bare"], floor)
        key = "compiled" if compiled else "eager"
        result[key] = {"ips": ips, "aa_floor": floor, "fit/bare": verdict, "steps": steps}
        rows += [[f"{key}, {k}", bench.fmt_stat(v)] for k, v in ips.items()]
        rows.append([f"{key}: fit / bare", verdict])
    md = [
        f"{'CIFAR ResNet-8 (quick)' if ctx.quick else 'ResNet-50'}, {image}x{image}, batch {batch}, {precision} + "
        f"channels_last, synthetic data on the device; compiled with {backend}.",
        "",
        markdown_table(["loop", "images/s, median (min-max)"], rows, [1]),
    ]
    if not ctx.quick:
        times = bench_host.cold_warm("resnet50", 1)
        result["compile_s"] = times
        cold, warm = times["cold"][0], times["warm"][0]
        md += ["", f"Compile (first step of a fresh process): cold {cold:.1f} s, warm {warm:.1f} s"]
    return result, md
