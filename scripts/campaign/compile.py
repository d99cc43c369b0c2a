"""Stage compile: ResNet-50 bare loop, torch.compile against eager, with an A/A floor. Inductor compiles
ResNet-50's forward + backward in more than 85 s on the GPU machine: the stage runs only when the budget
leaves it room (--budget 600, or --only compile)."""

import time

from scripts.campaign.common import Box, Context, StageResult
from src.markdown import markdown_table

BOX = Box(gpu=150, quick=120, min_gpu=120, min_quick=20, reserve=False)


def run(ctx: Context) -> StageResult:
    from scripts import bench
    from src.data.synthetic import SyntheticDataModule
    from src.models import resnet as R

    device = bench.setup_torch()
    image, batch = (32, 8) if ctx.quick else (224, ctx.earlier("throughput").get("batch", 256))
    build = (lambda: R.cifar_resnet(8, num_classes=1000)) if ctx.quick else R.resnet50
    # aot_eager traces and partitions the graph but generates no code: the stage's path at CPU cost
    backend = "aot_eager" if ctx.quick else "inductor"
    data = SyntheticDataModule(
        num_classes=1000, image_size=image, batch_size=batch, train_size=batch * 4, on_device=True
    )
    precision = "32-true" if ctx.quick else "bf16-mixed"  # as in the throughput stage
    eager_setting = bench.Setting(precision, channels_last=True)
    eager = bench.BareLoop(build(), bench.device_batches(data, device), eager_setting, device, batch)
    setting = bench.Setting(precision, channels_last=True, compile=True)
    compiled = bench.BareLoop(build(), bench.device_batches(data, device), setting, device, batch, backend)
    t0 = time.perf_counter()
    compiled.step_time(3)  # compiles forward and backward
    compile_s = time.perf_counter() - t0
    steps = bench.steps_for(eager.step_time(3), 0.3 if ctx.quick else 1.5)
    ips = bench.interleaved(3, {"eager": eager, "eager (A/A)": eager, "compiled": compiled}, 3, steps)
    floor = bench.aa_floor(ips["eager"], ips["eager (A/A)"])
    verdict = bench.compare(ips["compiled"], ips["eager"], floor)
    name = "CIFAR ResNet-8 (quick)" if ctx.quick else "ResNet-50"
    md = [
        f"{name}, {image}x{image}, batch {batch}, {precision} + channels_last, bare loop, {backend}; compile of "
        f"forward + backward took {compile_s:.0f} s (first steps). Windows of {steps} steps, 3 repeats interleaved.",
        "",
        markdown_table(["loop", "images/s, median (min-max)"], [[k, bench.fmt_stat(v)] for k, v in ips.items()], [1]),
        "",
        f"compiled / eager: {verdict}",
    ]
    return {"ips": ips, "compile_s": compile_s, "aa_floor": floor, "batch": batch, "compiled/eager": verdict}, md
