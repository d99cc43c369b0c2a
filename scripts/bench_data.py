"""Images/s of the two small-dataset loaders: DataLoader + per-image v2 transforms vs ``on_device``.

Two recipes, each run by both loaders:
  * paper: 4-px pad, random crop, flip, normalisation (the ResNet paper's CIFAR recipe);
  * randaugment: RandAugment (2 ops, magnitude 9), then the paper recipe, then random erasing
    (p = 0.25), as in configs/recipes/cifar_modern.yaml but with RandAugment, the costlier policy.
Data: CIFAR-shaped uint8 images (random pixels: the loaders' cost does not depend on content) and,
when present, real Fashion-MNIST. Only the loader is timed, no model.

The instrument is scripts/bench.py's: every loader keeps its iterator (and workers) between
measurements; a measurement is a warm-up batch, then a window of about ``--window-s`` seconds;
repeats are interleaved across loaders; a figure is the median with min-max. The ratio
on_device / the faster DataLoader is the median of the per-repeat ratios, beside the A/A noise
floor of on_device measured twice in the same repeats.

    python scripts/bench_data.py                      # CPU (and the GPU when there is one)
    python scripts/bench_data.py --out benchmarks/data.md --repeats 7
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from scripts.bench import Measure, aa_floor, fmt_stat, interleaved, ratios
from src import provenance
from src.data.common import TensorImageDataset
from src.data.on_device import DeviceLoader, PadCropFlipNormalize
from src.markdown import markdown_table

RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "randaugment": {"policy": "randaugment", "magnitude": 9, "erasing": 0.25},
}


class LoaderMeasure:
    """images/s of one loader over a window of about ``window_s`` seconds, after ``warmup`` batches.

    The iterator (and its workers) persists between calls. Loaders differ in speed by 10x and more,
    so each sets its own number of batches per window from a short probe on its first call.
    """

    def __init__(self, loader: Iterable, cuda: bool, window_s: float, batch: int = 128) -> None:
        self.loader, self.cuda, self.window_s, self.batch_size = loader, cuda, window_s, batch
        self.it: Iterator | None = None
        self.steps = 0

    def batch(self) -> torch.Tensor:
        while True:
            if self.it is None:
                self.it = iter(self.loader)
            try:
                return next(self.it)[0]
            except StopIteration:
                self.it = None

    def __call__(self, warmup: int, _steps: int) -> float:
        if not self.steps:
            self.steps = 3
            self.steps = max(3, round(self.window_s * self(1, 0) / self.batch_size))
        for _ in range(warmup):
            self.batch()
        seen, start = 0, time.perf_counter()
        for _ in range(self.steps):
            seen += len(self.batch())
        if self.cuda:
            torch.cuda.synchronize()
        ips = seen / (time.perf_counter() - start)
        workers = getattr(self.loader, "num_workers", 0)
        if workers:  # its workers go on filling the prefetch queue: let them finish before the next window
            time.sleep(2 * workers * self.batch_size / ips + 0.1)  # prefetch_factor 2 batches per worker
        return ips


def datasets() -> list[tuple[str, torch.Tensor, tuple[float, ...], tuple[float, ...]]]:
    g = torch.Generator().manual_seed(0)
    cifar = torch.randint(0, 256, (10000, 3, 32, 32), dtype=torch.uint8, generator=g)
    out: list[tuple[str, torch.Tensor, tuple[float, ...], tuple[float, ...]]] = [
        ("CIFAR-shaped 3x32x32", cifar, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    ]
    try:
        from src.data.fashion_mnist import FashionMNISTDataModule

        fmnist = FashionMNISTDataModule(val_size=0)
        out.append(("Fashion-MNIST 1x28x28", fmnist.load(train=True)[0], fmnist.mean, fmnist.std))
    except (FileNotFoundError, ValueError) as e:
        print(f"skipping Fashion-MNIST: {e}")
    return out


BATCH = 128
SECTION = "<!-- section: scripts/bench_imagenet.py -->"


def kept_section(out: Path) -> str:
    """The part of ``out`` that another benchmark writes (from its marker on), kept when this one rewrites it."""
    text = out.read_text() if out.exists() else ""
    return "\n" + text[text.index(SECTION) :] if SECTION in text else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/data.md")
    parser.add_argument("--window-s", type=float, default=2.0, help="seconds per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats")
    parser.add_argument("--quick", action="store_true", help="0.2 s windows, 2 repeats (for the tests)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: steadier on a small shared CPU, and one core per DataLoader worker too)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.window_s, args.repeats = 0.2, 2
    cpus = len(os.sched_getaffinity(0))
    out = Path(args.out)
    made = provenance.write(out.parent, ["python", "scripts/bench_data.py", *sys.argv[1:]], f"{out.stem}.provenance")
    start = time.perf_counter()
    header = ["data", "recipe", "loader", "images/s, median (min-max)", "on_device / DataLoader"]
    rows: list[list[str]] = []
    verdicts = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name, images, mean, std in datasets():
        labels = torch.zeros(len(images), dtype=torch.long)
        for recipe_name, extra in RECIPES.items():
            recipe = PadCropFlipNormalize(
                images.shape[-1], torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1),
                tuple(-m / s for m, s in zip(mean, std, strict=True)), padding=4, flip=True, **extra,
            )  # fmt: skip
            dataset = TensorImageDataset(images, labels, recipe.per_image())
            loaders: dict[str, Measure] = {}
            for workers in sorted({0, max(1, cpus - 1)}):
                loader = DataLoader(
                    dataset, BATCH, shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0
                )
                loaders[f"DataLoader, {workers} workers"] = LoaderMeasure(loader, False, args.window_s)
            for device in devices:
                fast = DeviceLoader(images, labels, recipe, BATCH, device, shuffle=True, drop_last=True)
                loaders[f"on_device, {device}"] = LoaderMeasure(fast, device == "cuda", args.window_s)
            loaders["on_device, cpu (A/A)"] = loaders["on_device, cpu"]
            ips = interleaved(args.repeats, loaders, 1, 0)  # each loader times its own window
            print(name, recipe_name, {k: [round(v) for v in vs] for k, vs in ips.items()}, flush=True)
            floor = aa_floor(ips["on_device, cpu"], ips["on_device, cpu (A/A)"])
            best = max((k for k in ips if k.startswith("DataLoader")), key=lambda k: statistics.median(ips[k]))
            rs = ratios(ips["on_device, cpu"], ips[best])
            verdict = (
                f"{statistics.median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f}) vs {best.split(', ')[1]}, "
                f"A/A ±{100 * floor:.1f}%"
            )
            verdicts.append((name, recipe_name, statistics.median(rs)))
            for key, values in ips.items():
                if key != "on_device, cpu (A/A)":
                    rows.append([name, recipe_name, key, fmt_stat(values), verdict if key == "on_device, cpu" else ""])
    wall = time.perf_counter() - start
    lines = [
        "# Data loader throughput: DataLoader path vs on_device fast path",
        "",
        f"`{made['command']}`, {wall:.0f} s wall (batch {BATCH}, loader only, no model; {cpus} usable CPU cores, "
        f"{torch.get_num_threads()} torch threads). {provenance.summary(made)} Provenance: "
        f"{out.stem}.provenance.json. Recipes: `paper` = pad 4 + crop + flip + normalise; "
        "`randaugment` = RandAugment(2, 9) + the paper recipe + random erasing (p 0.25), each image with its own "
        "draws on both paths. "
        f"{args.repeats} repeats interleaved, windows of about {args.window_s:g} s; the ratio is the median of "
        "the per-repeat ratios (min-max) against the faster DataLoader, beside the A/A noise floor (on_device "
        "measured twice).",
        "",
        markdown_table(header, rows, numeric=[3]),
        "",
    ]
    out.write_text("\n".join(lines) + kept_section(out))
    print("\n".join(lines))
    for name, recipe_name, ratio in verdicts:
        print(f"{name} {recipe_name}: on_device / DataLoader = {ratio:.2f}x")


if __name__ == "__main__":
    main()
