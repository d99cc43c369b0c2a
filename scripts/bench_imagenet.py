"""Images/s per DataLoader worker of the ImageNet loaders on ImageNet-like JPEGs, ours beside torchvision's.

Data: an ImageFolder tree of photo JPEGs at ILSVRC-2012's sizes (``src/data/jpeg_fixture.py``), written
to a temporary folder unless ``--data`` names one. Loaders, each with ``--workers`` workers, batch 32:
  * torchvision's reference recipe (references/classification/presets.py): ImageFolder + PIL +
    RandomResizedCrop + flip (+ RandAugment) + to float + normalise, per image;
  * ours, ``train_pipeline: per_image`` (the recipe per image in the workers, as before the fast path);
  * ours, ``train_pipeline: fast`` (crop-first decode, uint8 out; the rest runs on the device, timed apart);
for ``train_crop: scale`` and ``random_resized``, with and without RandAugment; and the eval loaders.
Only the loader is timed, no model. The instrument is scripts/bench_data.py's: repeats interleaved
across loaders, a figure is the median (min-max), a ratio the median of per-repeat ratios beside the
A/A floor (two separately built copies of one loader).

    python scripts/bench_imagenet.py                 # writes its section of benchmarks/data.md
    python scripts/bench_imagenet.py --quick --out /tmp/x.md
"""

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from scripts.bench import aa_floor, fmt_stat, interleaved, ratios
from scripts.bench_data import SECTION, LoaderMeasure
from src import provenance
from src.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageNetDataModule
from src.data.jpeg_fixture import write_tree
from src.markdown import markdown_table

BATCH = 32
# ResNet fit on one H100, bf16 + channels_last, synthetic data (benchmarks/gpu.md)
H100_IPS = {"ResNet-18": 10_460, "ResNet-50": 3_734, "ResNet-101": 2_559}
RECIPES = {  # name: (train_crop, auto_augment)
    "scale": ("scale", "none"),
    "random_resized": ("random_resized", "none"),
    "scale + RandAugment": ("scale", "randaugment"),
    "random_resized + RandAugment": ("random_resized", "randaugment"),
}


def reference_loader(root: Path, workers: int, train: bool, randaugment: bool = False) -> DataLoader:
    to_float = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train:
        ra = [v2.RandAugment(2, 9)] if randaugment else []
        ops: list[Any] = [v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), *ra, *to_float]
    else:
        ops = [v2.Resize(256, antialias=True), v2.CenterCrop(224), *to_float]
    data = ImageFolder(str(root / "train"), transform=v2.Compose(ops))
    return DataLoader(data, BATCH, shuffle=train, drop_last=True, num_workers=workers, persistent_workers=workers > 0)


def ours(root: Path, workers: int, recipe: str = "scale", pipeline: str = "fast") -> ImageNetDataModule:
    crop, policy = RECIPES[recipe]
    dm = ImageNetDataModule(data_dir=str(root), batch_size=BATCH, train_crop=crop, auto_augment=policy,  # type: ignore[arg-type]
                            train_pipeline=pipeline, num_workers=workers, val_size=0)  # type: ignore[arg-type]  # fmt: skip
    dm.setup("fit")
    return dm


def eval_loader(root: Path, workers: int) -> DataLoader:
    dm = ours(root, workers)
    return dm._loader(dm.folder("train", dm.eval_transform()), train=True)  # shuffled, as the others


def device_part(root: Path, recipe: str, repeats: int) -> list[float]:
    """images/s of the fast pipeline's batched remainder on this CPU (in training it runs on the GPU)."""
    dm = ours(root, 0, recipe)
    crops, y = next(iter(dm.train_dataloader()))
    out = []
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 0.5:
            dm.on_after_batch_transfer((crops, y), 0)
            n += len(crops)
        out.append(n / (time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/data.md", help="its ImageNet section is replaced or appended")
    parser.add_argument("--data", type=Path, help="an ImageFolder tree (default: a fixture in a temporary folder)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers per loader")
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    quick = "a small fixture, no workers, the scale recipe only, 0.2 s windows, 2 repeats (for the tests)"
    parser.add_argument("--quick", action="store_true", help=quick)
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipes = list(RECIPES)
    if args.quick:
        args.window_s, args.repeats, args.workers, recipes = 0.2, 2, 0, ["scale"]
    out = Path(args.out)
    made = provenance.write(out.parent, ["python", "scripts/bench_imagenet.py", *sys.argv[1:]], "imagenet.provenance")
    tmp = tempfile.TemporaryDirectory()
    root, fixture = args.data, {"source": "given", "images": "?", "mean_kb": float("nan")}
    if root is None:
        root = Path(tmp.name)
        fixture = write_tree(root, *((2, BATCH, 1) if args.quick else (10, 50, 2)))
    start, w = time.perf_counter(), args.workers
    loaders: dict[str, Any] = {"reference": reference_loader(root, w, True)}
    if "scale + RandAugment" in recipes:
        loaders["reference + RandAugment"] = reference_loader(root, w, True, randaugment=True)
    for recipe in recipes:
        for pipeline in ("per_image", "fast"):
            loaders[f"ours {pipeline}, {recipe}"] = ours(root, w, recipe, pipeline).train_dataloader()
    loaders["ours fast, scale (A/A)"] = ours(root, w, "scale", "fast").train_dataloader()
    loaders["reference eval"], loaders["ours eval"] = reference_loader(root, w, False), eval_loader(root, w)
    measures = {k: LoaderMeasure(v, False, args.window_s, BATCH) for k, v in loaders.items()}
    ips = interleaved(args.repeats, measures, 1, 0)  # type: ignore[arg-type]
    floor = aa_floor(ips["ours fast, scale"], ips["ours fast, scale (A/A)"])
    wall = time.perf_counter() - start

    def vs(key: str, base: str) -> str:
        rs = ratios(ips[key], ips[base])
        return f"{statistics.median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})"

    rows = []
    for key in ips:
        if key.endswith("(A/A)"):
            continue
        base = "reference" if "RandAugment" not in key else "reference + RandAugment"
        base = "reference eval" if "eval" in key else base
        before = key.replace("fast", "per_image")
        speedup = vs(key, before) if "fast" in key else ""
        rows.append([key, fmt_stat(ips[key]), vs(key, base) if key != base else "1", speedup])
    need = [["loader (images/s per worker, median)", *H100_IPS]]
    for key in ("reference", "ours per_image, scale", "ours fast, scale", "ours per_image, random_resized",
                "ours fast, random_resized"):  # fmt: skip
        if key not in ips:
            continue
        rate = statistics.median(ips[key])
        need.append([f"{key} ({rate:.0f})", *(str(math.ceil(r / rate)) for r in H100_IPS.values())])
    device = {r: device_part(root, r, args.repeats) for r in ("scale", "scale + RandAugment") if r in recipes}
    lines = [
        SECTION,
        "## ImageNet train and eval loaders on ImageNet-like JPEGs",
        "",
        f"`{made['command']}`, {wall:.0f} s wall; {provenance.summary(made)} Provenance: imagenet.provenance.json, "
        f"raw figures: imagenet_loader.json. Data: {fixture['images']} JPEGs from {fixture['source']} photographs "
        f"at ILSVRC-2012's sizes, quality 90, {fixture['mean_kb']:.0f} KB on average. {w} worker(s) per loader, "
        f"batch {BATCH}, loader only (no model), {args.repeats} repeats interleaved, windows of about "
        f"{args.window_s:g} s. A/A floor (`ours fast, scale` built twice): ±{100 * floor:.1f}%. The `fast` "
        "rows ship uint8 crops; what follows them (RandAugment, to float, lighting, normalise) runs batched "
        "on the training device and is timed apart below.",
        "",
        markdown_table(
            ["loader", "images/s per worker, median (min-max)", "vs torchvision reference", "fast / per_image"],
            rows,
            numeric=[1],
        ),
        "",
        "Workers one GPU needs to feed ResNet `fit` at the H100 rates of benchmarks/gpu.md, at this machine's "
        "per-worker rate (a faster core needs fewer):",
        "",
        markdown_table(need[0], need[1:], numeric=[1, 2, 3]),
        "",
        "The fast pipeline's device part on this CPU, one process, batch 32 (on a GPU it runs there): "
        + "; ".join(f"{r}: {fmt_stat(v)} images/s" for r, v in device.items())
        + ".",
        "",
    ]
    text = out.read_text() if out.exists() else ""
    out.write_text((text[: text.index(SECTION)] if SECTION in text else text + "\n") + "\n".join(lines))
    results = {"ips": ips, "aa_floor": floor, "device_part": device, "fixture": fixture, "workers": w}
    (out.parent / "imagenet_loader.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
