"""Images/s of the two small-dataset loaders: DataLoader + per-image v2 transforms vs ``on_device``.

Both run the same training recipe (4-px pad, random crop, flip, normalisation) on CIFAR-shaped
uint8 images (random pixels: the loaders' cost does not depend on content) and, when present,
real Fashion-MNIST. Only the loader is timed, no model. Results are printed and written as Markdown.

    python scripts/bench_data.py                      # CPU (and the GPU when there is one)
    python scripts/bench_data.py --out benchmarks/data.md --images 20480
"""

import argparse
import os
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from src.data.common import TensorImageDataset
from src.data.on_device import DeviceLoader, PadCropFlipNormalize
from src.loggers import cpu_name


def images_per_s(loader: Iterable, images: int, sync: bool) -> float:
    it = iter(loader)
    next(it)  # warm-up: worker start, first allocations
    seen, start = 0, time.perf_counter()
    while seen < images:
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += len(x)
    if sync:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def datasets() -> list[tuple[str, torch.Tensor, tuple[float, ...], tuple[float, ...]]]:
    g = torch.Generator().manual_seed(0)
    cifar = torch.randint(0, 256, (10000, 3, 32, 32), dtype=torch.uint8, generator=g)
    out = [("CIFAR-shaped 3x32x32", cifar, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))]
    try:
        from src.data.fashion_mnist import FashionMNISTDataModule

        fmnist = FashionMNISTDataModule(val_size=0)
        out.append(("Fashion-MNIST 1x28x28", fmnist.load(train=True)[0], fmnist.mean, fmnist.std))
    except (FileNotFoundError, ValueError) as e:
        print(f"skipping Fashion-MNIST: {e}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/data.md")
    parser.add_argument("--images", type=int, default=10240, help="images timed per measurement")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    threads_default = torch.get_num_threads()
    rows = []
    load = os.getloadavg()[0]
    for name, images, mean, std in datasets():
        size = images.shape[-1]
        recipe = PadCropFlipNormalize(
            size, torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1),
            tuple(-m / s for m, s in zip(mean, std, strict=True)), padding=4, flip=True,
        )  # fmt: skip
        labels = torch.zeros(len(images), dtype=torch.long)
        dataset = TensorImageDataset(images, labels, recipe.per_image())
        for workers in sorted({0, max(1, cpus - 1)}):
            loader = DataLoader(
                dataset, args.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                persistent_workers=workers > 0,
            )  # fmt: skip
            rows.append((name, f"DataLoader, {workers} workers", "cpu", images_per_s(loader, args.images, False)))
            print(rows[-1])
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            fast = DeviceLoader(images, labels, recipe, args.batch_size, device, shuffle=True, drop_last=True)
            # On a CPU that other processes share, torch's intra-op threads can wait on each other:
            # time the fast path with torch's default thread count and with one thread.
            for threads in sorted({threads_default, 1}, reverse=True) if device == "cpu" else [threads_default]:
                torch.set_num_threads(threads)
                n = args.images * (10 if device == "cuda" else 1)
                ips = images_per_s(fast, n, device == "cuda")
                rows.append((name, f"on_device (DeviceLoader), {threads} torch threads", device, ips))
                print(rows[-1])
            torch.set_num_threads(threads_default)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    lines = [
        "# Data loader throughput: DataLoader path vs on_device fast path",
        "",
        f"`python scripts/bench_data.py` (batch {args.batch_size}, pad 4 + crop + flip + normalise, loader only, "
        f"no model); {cpus} CPU cores ({cpu_name()}), GPU: {gpu}, "
        f"torch {torch.__version__}; load average before the run {load:.1f} (other processes share the CPU).",
        "",
        "| data | loader | device | images/s |",
        "|---|---|---|---:|",
        *(f"| {d} | {loader} | {dev} | {ips:,.0f} |" for d, loader, dev, ips in rows),
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
