"""Stage throughput: ResNet-50 at 224 px, bf16 + channels_last, the largest batch <= 256 that fits: bare
loops of torchvision's, timm's and our ResNet-50 and our Lightning fit, with an A/A floor; then our fit per
depth (README's model table). The instrument is scripts/bench.py's."""

import statistics
from collections.abc import Callable
from typing import Any

from scripts.campaign.common import Box, Context, StageResult
from src.markdown import markdown_table

BOX = Box(gpu=110, quick=240, min_gpu=40, min_quick=20)


def largest_batch(build: Callable[[], Any], image: int, device: Any, upto: int) -> int:
    """The largest power-of-two batch <= ``upto`` whose bf16 + channels_last training step fits in memory."""
    import torch
    import torch.nn.functional as F

    batch = upto
    while batch >= 8:
        net = build().to(device).to(memory_format=torch.channels_last)
        try:
            x = torch.randn(batch, 3, image, image, device=device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x), torch.zeros(batch, dtype=torch.long, device=device))
            loss.backward()
            return batch
        except torch.OutOfMemoryError:
            batch //= 2
        finally:
            del net
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return batch


def run(ctx: Context) -> StageResult:
    import torch
    import torchvision

    from scripts import bench
    from src.data.synthetic import SyntheticDataModule
    from src.models import resnet as R

    device = bench.setup_torch()
    image, upto, window, repeats = (32, 4, 0.3, 2) if ctx.quick else (224, 256, 1.5, 5)
    # bf16 autocast on CPUs without bf16 units is slower than fp32 and erratic: --quick measures fp32
    s = bench.Setting("32-true" if ctx.quick else "bf16-mixed", channels_last=True)
    batch = largest_batch(R.resnet50, image, device, upto)
    data = SyntheticDataModule(
        num_classes=1000, image_size=image, batch_size=batch, train_size=batch * 8, on_device=True
    )

    def bare(net: torch.nn.Module) -> bench.BareLoop:
        return bench.BareLoop(net, bench.device_batches(data, device), s, device, batch)

    ours = bare(R.resnet50())
    fns: dict[str, bench.Measure] = {"torchvision bare": bare(torchvision.models.resnet50()), "ours bare": ours}
    # The A/A twin is built separately: one object timed twice shares its allocations and gives too small a floor.
    fns |= {
        "ours bare (A/A)": bare(R.resnet50()),
        "ours Lightning fit": bench.LightningFit(R.resnet50(), data, s, ctx.accel),
    }
    failures = []
    try:  # in the dev extra and on the GPU machine's image: a missing timm is a failure, not a missing row
        import timm

        fns["timm bare"] = bare(timm.create_model("resnet50"))
    except ImportError as err:
        failures.append(f"timm is not importable ({err}): no timm row")
    warmup = 3
    steps = bench.steps_for(ours.step_time(warmup), window)
    ips = bench.interleaved(repeats, fns, warmup, steps)
    floor = bench.aa_floor(ips["ours bare"], ips["ours bare (A/A)"])
    pairs = {"ours / torchvision (bare)": ("ours bare", "torchvision bare")}
    pairs |= {
        "Lightning fit / bare (ours)": ("ours Lightning fit", "ours bare"),
        "ours / timm (bare)": ("ours bare", "timm bare"),
    }
    ratios = {k: bench.compare(ips[a], ips[b], floor) for k, (a, b) in pairs.items() if a in ips and b in ips}
    result: dict[str, Any] = {"batch": batch, "image": image, "steps": steps, "repeats": repeats, "ips": ips}
    result |= {"aa_floor": floor, "ratios": ratios, "failures": failures}
    result["ratio_medians"] = {
        k: statistics.median(bench.ratios(ips[a], ips[b])) for k, (a, b) in pairs.items() if b in ips
    }
    md = [
        f"ResNet-50, {image}x{image}, batch {batch} (the largest <= {upto} that fits), {s.label}, "
        f"synthetic data on the device; {warmup} warm-up steps, then windows of {steps} steps, {repeats} repeats "
        f"interleaved. A/A noise floor (two separately built copies of our bare loop): ±{100 * floor:.1f}%.",
        "",
        markdown_table(["loop", "images/s, median (min-max)"], [[k, bench.fmt_stat(v)] for k, v in ips.items()], [1]),
        "",
        markdown_table(["ratio", "value"], list(ratios.items())),
    ]
    del fns, ours
    torch.cuda.empty_cache() if device.type == "cuda" else None
    result["family"], rows = family(ctx, device, image, upto, s, steps)
    md += [
        "",
        markdown_table(["model", "batch", f"images/s, Lightning fit, {s.label}, median (min-max)"], rows, [1, 2]),
    ]
    return result, md


def family(ctx: Context, device: Any, image: int, upto: int, s: Any, steps: int) -> tuple[dict, list[list[str]]]:
    """Our Lightning fit per depth, same setting, largest batch <= 256 that fits (README's model table)."""
    import torch

    from scripts import bench
    from src.data.synthetic import SyntheticDataModule
    from src.models import resnet as R

    nets = {"resnet18": R.resnet18, "resnet34": R.resnet34, "resnet101": R.resnet101, "resnet152": R.resnet152}
    if ctx.quick:  # the loop's path at the cheapest depth
        nets = {"resnet18": R.resnet18}
    out: dict[str, Any] = {}
    rows = []
    for name, build in nets.items():
        if ctx.left() < (5 if ctx.quick else 25):
            rows.append([name, "", "skipped: stage out of time"])
            continue
        b = largest_batch(build, image, device, upto)
        d = SyntheticDataModule(num_classes=1000, image_size=image, batch_size=b, train_size=b * 8, on_device=True)
        fit = bench.LightningFit(build(), d, s, ctx.accel)
        fit(3, 2)  # a first short fit autotunes cuDNN for this depth; its figure is not kept
        samples = bench.interleaved(2 if ctx.quick else 3, {name: fit}, 3, max(3, steps // 2))[name]
        out[name] = {"batch": b, "ips": samples}
        rows.append([name, str(b), bench.fmt_stat(samples)])
        del fit, d
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return out, rows
