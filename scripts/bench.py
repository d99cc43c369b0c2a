"""Training throughput, side by side in one process: bare PyTorch loops vs our LightningModule.

Rows (same synthetic data, model size and batch within a row group):
  1. bare loop, torchvision.models.resnet50
  2. bare loop, our ResNet-50 (src.models.resnet), built twice: the A/A pair
  3. ImageClassifier under Trainer.fit with SyntheticDataModule
for 32-true, bf16-mixed, bf16-mixed + channels_last and (+ compile); then CIFAR ResNet-56
(bare vs Lightning) and Fashion-MNIST ResNet-20 (DataLoader vs the on_device fast path).

The instrument: every variant keeps its model between measurements; each measurement is a few
warm-up steps, then a timed window of about ``--window-s`` seconds. Repeats are interleaved
across variants, so drift hits all alike. A figure is the median with min-max over the repeats.
A ratio is the median of the per-repeat ratios, next to the A/A noise floor: the largest
|ratio - 1| of two separately built copies of one loop, interleaved (one object timed twice would
share its allocations and caches, and give too small a floor). A ratio inside the floor reads
"no difference". Synthetic batches are served from the device (``on_device``), so host-side
collation does not cap a GPU.

    python scripts/bench.py --quick   # small sizes, CPU, ~6 minutes
    python scripts/bench.py           # full sizes (GPU: ResNet-50 batch 256 at 224x224)
"""

import argparse
import itertools
import statistics
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

from src import provenance
from src.data.fashion_mnist import FashionMNISTDataModule
from src.data.synthetic import DeviceBatches, SyntheticDataModule
from src.markdown import markdown_table
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


# ---------------------------------------------------------------- the instrument


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fmt_stat(values: list[float], digits: int = 0) -> str:
    """``median (min-max)`` of a throughput figure."""
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


Measure = Callable[[int, int], float]  # (warm-up steps, timed steps) -> images/s


def interleaved(repeats: int, fns: dict[str, Measure], warmup: int, steps: int) -> dict[str, list[float]]:
    """``repeats`` samples of every measurement, taken in turns so that drift hits all alike."""
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            runs[key].append(fn(warmup, steps))
    return runs


def ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def aa_floor(a: list[float], a_again: list[float]) -> float:
    """The A/A noise floor: the largest |ratio - 1| of two copies of one loop, interleaved."""
    return max(abs(r - 1) for r in ratios(a, a_again))


def compare(a: list[float], b: list[float], floor: float) -> str:
    """``a / b`` as the median of per-repeat ratios (min-max), or "no difference" inside the A/A floor."""
    rs = ratios(a, b)
    med = statistics.median(rs)
    verdict = "no difference" if abs(med - 1) <= floor else ("faster" if med > 1 else "slower")
    return f"{med:.3f} ({min(rs):.3f}-{max(rs):.3f}), {verdict} (A/A ±{100 * floor:.1f}%)"


def steps_for(step_s: float, window_s: float, lo: int = 3, hi: int = 200) -> int:
    """Steps in a timed window of about ``window_s`` seconds, given one step's time."""
    return max(lo, min(hi, round(window_s / max(step_s, 1e-6))))


class BareLoop:
    """A plain PyTorch training loop (SGD, autocast, channels_last): the reference the template must match.

    The model and optimizer live as long as the object, so repeated measurements need no re-build,
    and only the first one pays cuDNN autotuning or compilation (inside its warm-up).
    """

    def __init__(
        self,
        net: nn.Module,
        batches: Iterator,
        s: Setting,
        device: torch.device,
        batch: int,
        compile_backend: str = "inductor",
    ) -> None:
        self.fmt = torch.channels_last if s.channels_last else torch.contiguous_format
        self.net = net.to(device).train().to(memory_format=self.fmt)
        if s.compile:
            self.net.compile(backend=compile_backend)
        self.initial = {k: v.clone() for k, v in self.net.state_dict().items()}
        self.opt = self.new_optimizer()
        self.bf16, self.batches, self.device, self.batch = s.precision == "bf16-mixed", batches, device, batch

    def new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def reset(self) -> None:
        """Back to the initial weights and a fresh optimizer. Trained on random labels at lr 0.1, the
        activations drift towards denormal numbers, which CPUs compute far slower (bf16 included, which
        set_flush_denormal does not cover): without this, later repeats measure the drift (seen: 39 -> 3
        images/s over 5 repeats of ResNet-50 on 2 cores)."""
        self.net.load_state_dict(self.initial)
        self.opt = self.new_optimizer()

    def step(self) -> None:
        x, y = next(self.batches)
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt)
        y = y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def step_time(self, steps: int = 3) -> float:
        """Seconds per step after ``steps`` warm-up steps (the first call compiles/autotunes)."""
        for _ in range(steps):
            self.step()
        sync(self.device)
        t0 = time.perf_counter()
        self.step()
        sync(self.device)
        return time.perf_counter() - t0

    def __call__(self, warmup: int, steps: int) -> float:
        self.reset()
        for _ in range(warmup):
            self.step()
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return steps * self.batch / (time.perf_counter() - t0)


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


class LightningFit:
    """``Trainer.fit`` of one ImageClassifier (kept between calls) over a window of steps, in images/s."""

    def __init__(self, net: nn.Module, data: L.LightningDataModule, s: Setting, accel: str) -> None:
        self.model = ImageClassifier(net, channels_last=s.channels_last, compile=s.compile, schedule="constant")
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.data, self.s, self.accel = data, s, accel

    def __call__(self, warmup: int, steps: int) -> float:
        self.model.load_state_dict(self.initial)  # as BareLoop.reset (the Trainer makes a new optimizer)
        timer = WindowTimer(warmup, steps)
        trainer = L.Trainer(
            accelerator=self.accel,
            devices=1,
            precision=self.s.precision,  # type: ignore[arg-type]
            max_steps=warmup + steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            benchmark=torch.backends.cudnn.benchmark,  # as the bare loops (the Trainer would reset it)
            callbacks=[timer],
        )
        trainer.fit(self.model, self.data)
        return steps * self.data.batch_size / timer.elapsed  # type: ignore[attr-defined]


def device_batches(data: SyntheticDataModule, device: torch.device) -> Iterator:
    """The training batches of ``data`` from its on-device copy, endlessly (bare loops)."""
    batches = DeviceBatches(data.train_set, data.batch_size, device, drop_last=True)
    return itertools.chain.from_iterable(itertools.repeat(batches))


# ---------------------------------------------------------------- the benchmark


@dataclass
class Sizes:
    image: int
    batch: int
    warmup: int
    window_s: float
    repeats: int
    cifar_batch: int
    fmnist_batch: int


QUICK = Sizes(image=32, batch=16, warmup=3, window_s=3.0, repeats=5, cifar_batch=32, fmnist_batch=128)
FULL = Sizes(image=224, batch=256, warmup=5, window_s=2.0, repeats=5, cifar_batch=128, fmnist_batch=512)

HEADER = ["model / data", "precision", "bare torchvision", "bare ours", "Lightning ours"]
HEADER += ["ours / tv", "Lightning / bare"]


def resnet50_rows(z: Sizes, device: torch.device, accel: str, settings: list[Setting]) -> list[list[str]]:
    rows = []
    for s in settings:
        data = SyntheticDataModule(
            num_classes=1000, image_size=z.image, batch_size=z.batch, train_size=z.batch * 8, on_device=True
        )
        ours = BareLoop(R.resnet50(), device_batches(data, device), s, device, z.batch)
        fns: dict[str, Measure] = {
            "tv": BareLoop(torchvision.models.resnet50(), device_batches(data, device), s, device, z.batch),
            "ours": ours,
            "ours (A/A)": BareLoop(R.resnet50(), device_batches(data, device), s, device, z.batch),
            "pl": LightningFit(R.resnet50(), data, s, accel),
        }
        steps = steps_for(ours.step_time(z.warmup), z.window_s)
        ips = interleaved(z.repeats, fns, z.warmup, steps)
        print(f"resnet50 {s.label}: {ips}", flush=True)
        floor = aa_floor(ips["ours"], ips["ours (A/A)"])
        rows.append(
            [
                f"ResNet-50, {z.image}x{z.image}, batch {z.batch}, {steps} steps",
                s.label,
                fmt_stat(ips["tv"]),
                fmt_stat(ips["ours"]),
                fmt_stat(ips["pl"]),
                compare(ips["ours"], ips["tv"], floor),
                compare(ips["pl"], ips["ours"], floor),
            ]
        )
    return rows


def cifar_rows(z: Sizes, device: torch.device, accel: str) -> list[list[str]]:
    data = SyntheticDataModule(
        num_classes=10, image_size=32, batch_size=z.cifar_batch, train_size=z.cifar_batch * 8, on_device=True
    )
    s = Setting()
    ours = BareLoop(R.cifar_resnet(56), device_batches(data, device), s, device, z.cifar_batch)
    pl = LightningFit(R.cifar_resnet(56), data, s, accel)
    steps = steps_for(ours.step_time(z.warmup), z.window_s)
    twin = BareLoop(R.cifar_resnet(56), device_batches(data, device), s, device, z.cifar_batch)
    ips = interleaved(z.repeats, {"ours": ours, "ours (A/A)": twin, "pl": pl}, z.warmup, steps)
    print(f"cifar resnet56: {ips}", flush=True)
    floor = aa_floor(ips["ours"], ips["ours (A/A)"])
    name = f"CIFAR ResNet-56, 32x32, batch {z.cifar_batch}, {steps} steps"
    return [[name, s.label, "", fmt_stat(ips["ours"]), fmt_stat(ips["pl"]), "", compare(ips["pl"], ips["ours"], floor)]]


def fmnist_rows(z: Sizes, accel: str) -> list[list[str]]:
    def fit(on_device: bool) -> LightningFit:
        data = FashionMNISTDataModule(
            batch_size=z.fmnist_batch, on_device=on_device, num_workers=0 if on_device else None
        )
        return LightningFit(R.cifar_resnet(20, in_channels=1), data, Setting(), accel)

    loader, device, twin = fit(False), fit(True), fit(True)
    steps = max(10, round(z.window_s * 10))  # one Trainer.fit to time a step would cost as much as a window
    ips = interleaved(z.repeats, {"loader": loader, "device": device, "device (A/A)": twin}, z.warmup, steps)
    print(f"fmnist resnet20: {ips}", flush=True)
    floor = aa_floor(ips["device"], ips["device (A/A)"])
    name = f"Fashion-MNIST ResNet-20, batch {z.fmnist_batch}, {steps} steps"
    return [
        [name + ", DataLoader", "32-true", "", "", fmt_stat(ips["loader"]), "", ""],
        [
            name + ", on_device",
            "32-true",
            "",
            "",
            fmt_stat(ips["device"]),
            "",
            compare(ips["device"], ips["loader"], floor) + " vs DataLoader",
        ],
    ]


def setup_torch() -> torch.device:
    torch.set_float32_matmul_precision("high")
    # Random labels at lr 0.1 drive activations into denormals, which x86 CPUs compute up to
    # 100x slower; without this the CPU numbers measure the FPU's denormal path, not the loops.
    torch.set_flush_denormal(True)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a CPU (~6 min)")
    parser.add_argument("--compile", action="store_true", help="add +compile rows (slow to compile on a CPU)")
    parser.add_argument("--window-s", type=float, help="seconds per timed window (default: 3 quick, 2 full)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 5)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: 1 with --quick, torch's otherwise). On a small shared CPU one thread "
        "is steadier: a multi-threaded op waits for whichever of its threads the scheduler gave away",
    )
    parser.add_argument("--out", default="benchmarks/results.md")
    args = parser.parse_args()

    device = setup_torch()
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    accel = "gpu" if device.type == "cuda" else "cpu"
    z = QUICK if args.quick else FULL
    z.window_s = args.window_s or z.window_s
    z.repeats = args.repeats or z.repeats
    settings = [Setting(), Setting("bf16-mixed"), Setting("bf16-mixed", channels_last=True)]
    if args.compile or device.type == "cuda":
        settings.append(Setting("bf16-mixed", channels_last=True, compile=True))

    out = Path(args.out)
    # Where the figures come from (commit, diff, machine, software), written before the measurement.
    made = provenance.write(out.parent, ["python", "scripts/bench.py", *sys.argv[1:]], f"{out.stem}.provenance")
    start = time.perf_counter()
    rows = resnet50_rows(z, device, accel, settings) + cifar_rows(z, device, accel) + fmnist_rows(z, accel)
    wall = time.perf_counter() - start

    text = "\n".join(
        [
            "# Training throughput (images/s: median (min-max) over the repeats)",
            "",
            f"`{made['command']}`, {wall:.0f} s wall, {torch.get_num_threads()} torch threads. "
            f"{provenance.summary(made)} Provenance: {out.stem}.provenance.json.",
            f"Warm-up {z.warmup} steps excluded, then windows of about {z.window_s:g} s (steps in each row's name), "
            f"{z.repeats} repeats interleaved across variants. Ratios: median of the per-repeat ratios (min-max); "
            "A/A: the largest deviation from 1 between two separately built copies of one loop in the same "
            "repeats; a ratio inside it reads 'no difference'.",
            "",
            markdown_table(HEADER, rows, numeric=range(2, len(HEADER))),
            "",
        ]
    )
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
