"""Per-step host cost: ms per step of ``Trainer.fit`` with the run's callbacks against a bare PyTorch loop.

On a network small enough that the host dominates (a one-conv net on 8x8 images, batch 32) and on
Fashion-MNIST ResNet-20 shapes (1x28x28, batch 256), the same data served from the device, fp32:
  * ``bare``, ``bare (A/A)``: scripts/bench.py's BareLoop, built twice (the A/A noise floor);
  * ``fit, plain``: ImageClassifier under a Trainer with no logger, callbacks or progress;
  * ``fit, as run``: the callbacks and logger ``src.cli`` always adds (LearningRateMonitor per step,
    FiniteLoss, ResumeState, StartGuard, RunFacts, TextProgress, Preemption, the CSV logger).
The instrument is scripts/bench.py's: every variant keeps its model; windows of steps after a warm-up,
repeats interleaved; a figure is the median (min-max). Overhead = ms/step of a fit minus the bare loop's.

Then the breakdown: one more ``fit, as run`` whose callback hooks, ``self.log``, metric updates, the lr
scheduler, the optimizer step and Lightning's per-step logging are each wrapped in a timer, in µs per step.

    python scripts/bench_host.py --out benchmarks/host.json      # raw results + host.provenance.json
    python -m scripts.published benchmarks/host.md               # the tables of benchmarks/host.md
"""

import argparse
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from scripts.bench import BareLoop, Setting, WindowTimer, aa_floor, device_batches, interleaved, setup_torch
from src import provenance
from src.bad_input import StartGuard
from src.callbacks import FiniteLoss, ResumeState
from src.data.synthetic import SyntheticDataModule
from src.loggers import RunFacts
from src.models import resnet as R
from src.models.classifier import ImageClassifier
from src.preemption import Preemption
from src.progress import TextProgress


class TinyNet(nn.Module):
    """One conv, BN, pooling and the head: microseconds of arithmetic, so a step's time is the host's."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


@dataclass(frozen=True)
class Code:
    """The per-step code under test: this checkout's, or a baseline commit's (``--baseline``)."""

    name: str = "this checkout"
    classifier: type = ImageClassifier
    finite_loss: type = FiniteLoss


def baseline(rev: str) -> Code:
    """ImageClassifier and FiniteLoss as they were at ``rev``, loaded beside this checkout's: the before and
    after of a change measured interleaved in one process (separate runs on a shared CPU drift apart)."""
    folder = Path(tempfile.mkdtemp(prefix="bench_host_baseline_"))
    mods = {}
    for name, path in (("classifier", "src/models/classifier.py"), ("callbacks", "src/callbacks.py")):
        show = ["git", "show", f"{rev}:{path}"]
        (folder / f"baseline_{name}.py").write_text(
            subprocess.run(show, capture_output=True, text=True, check=True).stdout
        )
        spec = importlib.util.spec_from_file_location(f"baseline_{name}", folder / f"baseline_{name}.py")
        assert spec is not None and spec.loader is not None
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    return Code(f"baseline {rev}", mods["classifier"].ImageClassifier, mods["callbacks"].FiniteLoss)


def run_callbacks(folder: Path, code: Code = Code()) -> tuple[list[Callback], CSVLogger]:
    """What ``src.cli`` puts in every run (text progress: stdout is a file in a job), and its CSV logger."""
    callbacks: list[Callback] = [LearningRateMonitor(logging_interval="step"), code.finite_loss(), ResumeState()]
    callbacks += [StartGuard(), RunFacts("bench_host"), TextProgress()]
    callbacks.append(Preemption(requeue=False, checkpoint_dir=folder))
    return callbacks, CSVLogger(folder, name="bench_host")


class Fit:
    """``Trainer.fit`` of one ImageClassifier over a window of steps, plain or with the run's callbacks, in ms/step.

    ``timers``: wrap the per-step pieces in timers (the breakdown); the timed window then includes their cost.
    """

    def __init__(
        self,
        net: nn.Module,
        data: SyntheticDataModule,
        as_run: bool,
        timers: "Timers | None" = None,
        code: Code = Code(),
    ) -> None:
        self.model = code.classifier(net, schedule="constant")
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.data, self.as_run, self.timers, self.code = data, as_run, timers, code
        self.folder = Path(tempfile.mkdtemp(prefix="bench_host_"))

    def __call__(self, warmup: int, steps: int) -> float:
        self.model.load_state_dict(self.initial)
        timer = WindowTimer(warmup, steps)
        callbacks, logger = run_callbacks(self.folder, self.code) if self.as_run else ([], None)
        trainer = L.Trainer(
            accelerator="cpu" if self.model.device.type == "cpu" else "gpu",
            devices=1,
            max_steps=warmup + steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=logger or False,
            enable_checkpointing=False,
            enable_progress_bar=self.as_run,
            enable_model_summary=False,
            callbacks=[timer, *callbacks],
        )
        if self.timers is not None:
            self.timers.attach(trainer, self.model, callbacks, warmup)
        trainer.fit(self.model, self.data)
        return 1000 * timer.elapsed / steps


class Timers:
    """Wall time of wrapped callables, summed per item over the steps after ``warmup``."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.trainer: L.Trainer | None = None
        self.warmup = 0

    def wrap(self, obj: Any, attr: str, item: str) -> None:
        fn = getattr(obj, attr)
        if getattr(fn, "_timed", False):
            fn = fn.__wrapped__

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.trainer is not None and self.trainer.global_step >= self.warmup:
                    self.total[item] += time.perf_counter() - t0

        timed._timed = True  # type: ignore[attr-defined]
        setattr(obj, attr, timed)

    def attach(self, trainer: L.Trainer, model: ImageClassifier, callbacks: list[Callback], warmup: int) -> None:
        self.trainer, self.warmup = trainer, warmup
        hooks = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward")
        hooks += ("on_before_optimizer_step", "on_before_zero_grad")  # type: ignore[assignment]
        for cb in callbacks:
            for hook in hooks:
                if getattr(type(cb), hook) is not getattr(Callback, hook):  # only the hooks it implements
                    self.wrap(cb, hook, f"callback {type(cb).__name__}")
        self.wrap(model, "log", "self.log (module)")
        self.wrap(model.train_metrics, "update", "metric update (torchmetrics)")
        self.wrap(model, "forward", "forward (network)")
        connector = trainer._logger_connector
        self.wrap(connector, "update_train_step_metrics", "Lightning step logging (incl. logger writes)")
        self.wrap(trainer.strategy, "training_step", "training_step (forward, loss, log, metrics)")
        self.wrap(trainer.strategy, "optimizer_step", "optimizer step (incl. closure: training_step, backward)")

    def per_step(self, steps: int) -> dict[str, float]:
        return {k: 1e6 * v / steps for k, v in sorted(self.total.items(), key=lambda kv: -kv[1])}


def breakdown(
    build: Callable[[], nn.Module], data: SyntheticDataModule, warmup: int, steps: int, code: Code = Code()
) -> dict[str, float]:
    """µs per step of each per-step item of ``fit, as run`` (one fit, timers on), and the step itself."""
    timers = Timers()
    fit = Fit(build(), data, as_run=True, timers=timers, code=code)
    fit(warmup, 3)  # the first fit pays one-off setup (RunFacts' facts, the logger's files)
    timers.total.clear()
    ms = fit(warmup, steps)
    out = timers.per_step(steps)
    # The scheduler is created inside fit: timed through the step's pieces that are not listed above
    out["step total (timers on)"] = 1000 * ms
    return out


# ---------------------------------------------------------------- compile, cold and warm


class FirstStep(Callback):
    """Wall time of the first training step (where torch.compile compiles forward and backward)."""

    def __init__(self) -> None:
        self.t0, self.seconds = 0.0, float("nan")

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == 0:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == 1:
            self.seconds = time.perf_counter() - self.t0


def compile_probe(root: str, net: str) -> dict[str, Any]:
    """One process's compiled fit of 2 steps with its compile cache under ``root``: the first step's time
    and inductor's and AOTAutograd's cache counters (hits mean the artefacts of an earlier process were used)."""
    from torch._dynamo.utils import counters

    gpu = torch.cuda.is_available()
    if net == "resnet50":  # the campaign's (GPU): as its throughput stage trains it
        build: Callable[[], nn.Module] = R.resnet50
        spec: dict[str, Any] = dict(num_classes=1000, in_channels=3, image_size=224, batch_size=128)
    else:
        build = TinyNet if net == "tiny" else lambda: R.cifar_resnet(20, in_channels=1)
        spec = shapes(True)[net]["data"]
    data = SyntheticDataModule(**spec, train_size=spec["batch_size"] * 4, on_device=True)
    first = FirstStep()
    trainer = L.Trainer(
        accelerator="auto", devices=1, max_steps=2, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[first], precision="bf16-mixed" if gpu else "32-true",
    )  # fmt: skip
    trainer.fit(ImageClassifier(build(), schedule="constant", compile=True, channels_last=gpu), data)
    found = {k: v for group in ("inductor", "aot_autograd") for k, v in counters[group].items() if "cache" in k}
    return {"first_step_s": first.seconds, "counters": found}


def cold_warm(net: str, repeats: int) -> dict[str, list[float]]:
    """First-step seconds of a compiled fit in a fresh process: cold (empty cache) and warm (the cold one's
    cache), interleaved; each repeat a new cache directory."""
    times: dict[str, list[float]] = {"cold": [], "warm": []}
    for _ in range(repeats):
        root = tempfile.mkdtemp(prefix="compile_cache_")
        for kind in times:
            cmd = [sys.executable, __file__, "--compile-probe", root, "--shapes", net]
            env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            probe = json.loads(out.strip().splitlines()[-1])
            print(f"compile {net} {kind}: {probe}", flush=True)
            times[kind].append(probe["first_step_s"])
    return times


# ---------------------------------------------------------------- the benchmark


def shapes(quick: bool) -> dict[str, dict[str, Any]]:
    tiny_batch = 32
    return {
        "tiny": {
            "what": f"one-conv net (16 channels), 3x8x8, batch {tiny_batch}",
            "build": TinyNet,
            "data": dict(num_classes=10, in_channels=3, image_size=8, batch_size=tiny_batch),
            "window_s": 0.5 if quick else 2.0,
        },
        "resnet20": {
            "what": "Fashion-MNIST ResNet-20 shapes, 1x28x28, batch 256",
            "build": lambda: R.cifar_resnet(20, in_channels=1),
            "data": dict(num_classes=10, in_channels=1, image_size=28, batch_size=256),
            "window_s": 1.0 if quick else 2.0,
        },
    }


def measure(
    name: str, spec: dict[str, Any], repeats: int, warmup: int, device: torch.device, base: Code | None
) -> dict[str, Any]:
    data_args = dict(spec["data"])
    batch = data_args["batch_size"]
    steps_hint = 1000  # an epoch far longer than any window: no epoch boundary inside one
    data = SyntheticDataModule(**data_args, train_size=batch * steps_hint, on_device=True)
    s = Setting()
    bare = BareLoop(spec["build"](), device_batches(data, device), s, device, batch)
    step_s = bare.step_time(warmup)
    steps = max(10, min(400, round(spec["window_s"] / max(step_s, 1e-6))))

    def ms(loop: BareLoop) -> Callable[[int, int], float]:
        return lambda w, n: 1000 * batch / loop(w, n)  # images/s -> ms per step

    fns: dict[str, Callable[[int, int], float]] = {
        "bare": ms(bare),
        "bare (A/A)": ms(BareLoop(spec["build"](), device_batches(data, device), s, device, batch)),
        "fit, plain": Fit(spec["build"](), data, as_run=False),
        "fit, as run": Fit(spec["build"](), data, as_run=True),
    }
    if base is not None:
        fns[f"fit, as run, {base.name}"] = Fit(spec["build"](), data, as_run=True, code=base)
    samples = interleaved(repeats, fns, warmup, steps)
    print(f"{name}: {samples}", flush=True)
    # aa_floor works on rates: the largest |ratio - 1| of the two bare loops
    floor = aa_floor([1 / v for v in samples["bare"]], [1 / v for v in samples["bare (A/A)"]])
    bare_ms = samples["bare"]
    overhead = {k: [f - b for f, b in zip(samples[k], bare_ms, strict=True)] for k in fns if k.startswith("fit")}
    items = breakdown(spec["build"], data, warmup, steps)
    base_items = breakdown(spec["build"], data, warmup, steps, base) if base is not None else None
    print(f"{name} breakdown (µs/step): {json.dumps(items, indent=1)}", flush=True)
    return {
        "what": spec["what"],
        "steps": steps,
        "repeats": repeats,
        "ms_per_step": samples,
        "overhead_ms": overhead,
        "aa_floor": floor,
        "breakdown_us": items,
        "baseline": base.name if base is not None else None,
        "baseline_breakdown_us": base_items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/host.json", help="raw results (JSON); provenance beside it")
    parser.add_argument("--label", default="after", help="key of this measurement in the results file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", nargs="*", default=["tiny", "resnet20"])
    parser.add_argument("--quick", action="store_true", help="short windows, 2 repeats (the tests)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared CPU)")
    parser.add_argument("--baseline", metavar="REV", help="also time the classifier and FiniteLoss of commit REV")
    parser.add_argument("--compile", type=int, default=0, metavar="N", help="N cold/warm compile pairs per shape")
    parser.add_argument("--compile-probe", metavar="ROOT", help=argparse.SUPPRESS)  # one process of cold_warm
    args = parser.parse_args()
    device = setup_torch()
    torch.set_num_threads(args.threads)
    if args.compile_probe:
        print(json.dumps(compile_probe(args.compile_probe, args.shapes[0])))
        return
    repeats = 2 if args.quick else args.repeats
    out = Path(args.out)
    made = provenance.write(
        out.parent, ["python", "scripts/bench_host.py", *sys.argv[1:]], f"{out.stem}.{args.label}.provenance"
    )
    start = time.perf_counter()
    specs = shapes(args.quick)
    base = baseline(args.baseline) if args.baseline else None
    results = {name: measure(name, specs[name], repeats, 3, device, base) for name in args.shapes if repeats}
    for name in args.shapes if args.compile else []:
        results.setdefault(name, {"what": specs[name]["what"]})["compile_s"] = cold_warm(name, args.compile)
    raw = json.loads(out.read_text()) if out.exists() else {}
    entry = raw.setdefault(args.label, {"shapes": {}})
    entry["shapes"] |= results  # the shapes of an earlier call under this label stay
    entry |= {
        "command": made["command"],
        "provenance": f"{out.stem}.{args.label}.provenance.json",
        "summary": provenance.summary(made),
        "threads": torch.get_num_threads(),
        "wall_s": round(time.perf_counter() - start),
    }
    out.write_text(json.dumps(raw, indent=1) + "\n")
    for name, r in results.items():
        if "overhead_ms" not in r:
            continue
        med = {k: statistics.median(v) for k, v in r["overhead_ms"].items()}
        print(f"{name}: bare {statistics.median(r['ms_per_step']['bare']):.3f} ms/step; overhead {med}")


if __name__ == "__main__":
    main()
