"""Training throughput, side by side in one process: bare PyTorch loops vs our LightningModule.

Rows (same synthetic data, model size and batch within a row group):
  1. bare loop, torchvision.models.resnet50
  2. bare loop, our ResNet-50 (src.models.resnet)
  3. ImageClassifier under Trainer.fit with SyntheticDataModule
for 32-true, bf16-mixed, bf16-mixed + channels_last and (+ compile); then CIFAR ResNet-56
(bare vs Lightning) and Fashion-MNIST ResNet-20 (DataLoader vs the on_device fast path).

Each measurement: warm-up steps excluded, then a timed window of steps; repeats are
interleaved across variants so drift hits all alike; the median is reported.

    python scripts/bench.py --quick   # small sizes, CPU, ~3 minutes
    python scripts/bench.py           # full sizes (GPU: ResNet-50 batch 256 at 224x224)
"""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch.callbacks import Callback
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.fashion_mnist import FashionMNISTDataModule
from src.data.synthetic import SyntheticDataModule
from src.loggers import cpu_name
from src.models import resnet as R
from src.models.classifier import ImageClassifier


@dataclass(frozen=True)
class Setting:
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        return (
            self.precision + (" + channels_last" if self.channels_last else "") + (" + compile" if self.compile else "")
        )


@dataclass
class Sizes:
    image: int
    batch: int
    warmup: int
    steps: int
    repeats: int
    cifar_batch: int
    fmnist_batch: int


QUICK = Sizes(image=32, batch=16, warmup=3, steps=8, repeats=5, cifar_batch=32, fmnist_batch=128)
FULL = Sizes(image=224, batch=256, warmup=10, steps=30, repeats=5, cifar_batch=128, fmnist_batch=512)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cycle(loader: object) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader  # type: ignore[misc]


def bare_loop(
    net: nn.Module, loader: object, s: Setting, device: torch.device, warmup: int, steps: int, batch: int
) -> float:
    """images/s of a plain PyTorch training loop: the reference the template must match."""
    net = net.to(device).train()
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    if s.compile:
        net.compile()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    bf16 = s.precision == "bf16-mixed"
    batches = cycle(loader)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        x, y = next(batches)
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


class WindowTimer(Callback):
    """Times optimizer steps warmup..warmup+steps inside Trainer.fit (the whole loop, data included)."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.t0, self.elapsed = warmup, steps, 0.0, float("nan")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, i: int) -> None:
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.warmup + self.steps:
            sync(pl_module.device)
            self.elapsed = time.perf_counter() - self.t0


def lightning_fit(
    build: Callable[[], nn.Module], data: L.LightningDataModule, s: Setting, accel: str, warmup: int, steps: int
) -> float:
    model = ImageClassifier(build(), channels_last=s.channels_last, compile=s.compile, schedule="constant")
    timer = WindowTimer(warmup, steps)
    trainer = L.Trainer(
        accelerator=accel,
        devices=1,
        precision=s.precision,  # type: ignore[arg-type]
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, data)
    return steps * data.batch_size / timer.elapsed  # type: ignore[attr-defined]


def median_of(repeats: int, fns: dict[str, Callable[[], float]]) -> dict[str, float]:
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved: every variant sees the same drift
        for key, fn in fns.items():
            runs[key].append(fn())
    return {k: statistics.median(v) for k, v in runs.items()}


def resnet50_rows(z: Sizes, device: torch.device, accel: str, settings: list[Setting]) -> list[list[str]]:
    data = SyntheticDataModule(num_classes=1000, image_size=z.image, batch_size=z.batch, train_size=z.batch * 8)
    loader = data.train_dataloader()
    steps = dict(warmup=z.warmup, steps=z.steps)
    rows = []
    for s in settings:
        ips = median_of(
            z.repeats,
            {
                "tv": lambda s=s: bare_loop(torchvision.models.resnet50(), loader, s, device, batch=z.batch, **steps),
                "ours": lambda s=s: bare_loop(R.resnet50(), loader, s, device, batch=z.batch, **steps),
                "pl": lambda s=s: lightning_fit(R.resnet50, data, s, accel, **steps),
            },
        )
        print(f"resnet50 {s.label}: {ips}", flush=True)
        rows.append(
            [
                f"ResNet-50, {z.image}x{z.image}, batch {z.batch}",
                s.label,
                f"{ips['tv']:,.1f}",
                f"{ips['ours']:,.1f}",
                f"{ips['pl']:,.1f}",
                f"{ips['ours'] / ips['tv']:.3f}",
                f"{ips['pl'] / ips['ours']:.3f}",
            ]
        )
    return rows


def cifar_rows(z: Sizes, device: torch.device, accel: str) -> list[list[str]]:
    data = SyntheticDataModule(num_classes=10, image_size=32, batch_size=z.cifar_batch, train_size=z.cifar_batch * 8)
    loader, s, steps = data.train_dataloader(), Setting(), dict(warmup=z.warmup, steps=z.steps * 2)
    ips = median_of(
        z.repeats,
        {
            "ours": lambda: bare_loop(R.cifar_resnet(56), loader, s, device, batch=z.cifar_batch, **steps),
            "pl": lambda: lightning_fit(lambda: R.cifar_resnet(56), data, s, accel, **steps),
        },
    )
    print(f"cifar resnet56: {ips}", flush=True)
    name = f"CIFAR ResNet-56, 32x32, batch {z.cifar_batch}"
    return [[name, s.label, "", f"{ips['ours']:,.1f}", f"{ips['pl']:,.1f}", "", f"{ips['pl'] / ips['ours']:.3f}"]]


def fmnist_rows(z: Sizes, accel: str) -> list[list[str]]:
    def run(on_device: bool) -> float:
        data = FashionMNISTDataModule(
            batch_size=z.fmnist_batch, on_device=on_device, num_workers=0 if on_device else None
        )
        net = lambda: R.cifar_resnet(20, in_channels=1)  # noqa: E731
        return lightning_fit(net, data, Setting(), accel, warmup=z.warmup, steps=z.steps * 2)

    ips = median_of(z.repeats, {"loader": lambda: run(False), "device": lambda: run(True)})
    print(f"fmnist resnet20: {ips}", flush=True)
    name = f"Fashion-MNIST ResNet-20, batch {z.fmnist_batch}"
    return [
        [name + ", DataLoader", "32-true", "", "", f"{ips['loader']:,.1f}", "", ""],
        [
            name + ", on_device",
            "32-true",
            "",
            "",
            f"{ips['device']:,.1f}",
            "",
            f"{ips['device'] / ips['loader']:.3f} (vs DataLoader)",
        ],
    ]


def environment(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    cpu = cpu_name()
    load = f"{os.getloadavg()[0]:.2f}"
    return (
        f"{datetime.date.today()}; GPU: {gpu}; CPU: {cpu}, {torch.get_num_threads()} torch threads, "
        f"load average at start {load}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"lightning {L.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a CPU (~3 min)")
    parser.add_argument("--compile", action="store_true", help="add +compile rows (slow to compile on a CPU)")
    parser.add_argument("--out", default="benchmarks/results.md")
    args = parser.parse_args()

    torch.set_float32_matmul_precision("high")
    # Random labels at lr 0.1 drive activations into denormals, which x86 CPUs compute up to
    # 100x slower; without this the CPU numbers measure the FPU's denormal path, not the loops.
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accel = "gpu" if device.type == "cuda" else "cpu"
    z = QUICK if args.quick else FULL
    settings = [Setting(), Setting("bf16-mixed"), Setting("bf16-mixed", channels_last=True)]
    if args.compile or device.type == "cuda":
        settings.append(Setting("bf16-mixed", channels_last=True, compile=True))

    env = environment(device)
    start = time.perf_counter()
    rows = resnet50_rows(z, device, accel, settings) + cifar_rows(z, device, accel) + fmnist_rows(z, accel)
    wall = time.perf_counter() - start

    header = [
        "model / data",
        "precision",
        "bare torchvision",
        "bare ours",
        "Lightning ours",
        "ours / tv",
        "Lightning / bare",
    ]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    command = "python scripts/bench.py " + " ".join(sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    text = "\n".join(
        [
            "# Training throughput (images/s, median)",
            "",
            f"`{command}` at commit {commit or '?'}, {wall:.0f} s wall. {env}.",
            f"Warm-up {z.warmup} steps excluded, then windows of {z.steps} steps (x2 for the small nets), "
            f"{z.repeats} repeats interleaved across variants.",
            "",
            *table,
            "",
        ]
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
