"""What resumable train loaders (src/data/resume.py) cost: time per batch and checkpoint bytes, before/after.

Time: batches of the Fashion-MNIST quickstart's training transform (pad 2, crop, flip, normalise),
only the loader timed, no model, so the figure is the upper bound of the change's share of a step:
  * DataLoader, ``num_workers=0`` (every per-sample cost shows): before = ``DataLoader(shuffle=True)``,
    after = ``ResumableDataLoader`` (EpochSampler + a seeded RNG per sample);
  * ``on_device``: before = the former ``DeviceLoader.__iter__`` (one generator per epoch, reproduced
    below), after = ``DeviceLoader`` (a generator re-seeded per batch, and the count of served batches).
Each "before" is built twice: the A/A pair. The instrument is scripts/bench.py's (interleaved repeats,
median (min-max), ratio of the per-repeat ratios beside the A/A floor).
Bytes: a quickstart checkpoint written by a short Trainer.fit, with and without the two position entries.

    python -m scripts.bench_resume --out benchmarks/resume.md
"""

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from scripts.bench import Measure, aa_floor, compare, fmt_stat, interleaved
from src import provenance
from src.data.fashion_mnist import FashionMNISTDataModule
from src.data.on_device import DeviceLoader
from src.data.resume import ResumableDataLoader
from src.markdown import markdown_table
from src.models.classifier import ImageClassifier
from src.models.resnet import ResNet


def old_device_iter(loader: DeviceLoader) -> Iterator[Any]:
    """``DeviceLoader.__iter__`` as it was before resumable loaders: one generator seeded per epoch."""
    order = torch.tensor(list(loader.sampler), device=loader.device)
    generator = torch.Generator(device=loader.device)
    generator.manual_seed((loader.sampler.seed * 1_000_003 + loader.sampler.epoch) * 4096 + loader.rank)
    for i in range(len(loader)):
        idx = order[i * loader.batch_size : (i + 1) * loader.batch_size]
        yield loader.augment(loader.images[idx], generator), loader.labels[idx]


class Batches:
    """A ``Measure``: seconds per batch over ``steps`` batches after ``warmup``, the iterator kept between calls."""

    def __init__(self, make: Any) -> None:
        self.make, self.it = make, iter(())

    def next(self) -> Any:
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.make())
            return next(self.it)

    def __call__(self, warmup: int, steps: int) -> float:
        for _ in range(warmup):
            self.next()
        start = time.perf_counter()
        for _ in range(steps):
            self.next()
        return (time.perf_counter() - start) / steps * 1e3  # ms per batch


def loaders(data: FashionMNISTDataModule) -> dict[str, Measure]:
    ds = data.train_set
    assert ds is not None
    plain: dict[str, Any] = dict(batch_size=data.batch_size, drop_last=True, num_workers=0)
    device = DeviceLoader(ds.images, ds.labels, data.recipe(True), data.batch_size, shuffle=True, drop_last=True)
    return {
        "DataLoader before": Batches(lambda: DataLoader(ds, shuffle=True, **plain)),
        "DataLoader before (A/A)": Batches(lambda: DataLoader(ds, shuffle=True, **plain)),
        "DataLoader after": Batches(lambda: ResumableDataLoader(ds, **plain)),
        "on_device before": Batches(lambda: old_device_iter(device)),
        "on_device before (A/A)": Batches(lambda: old_device_iter(device)),
        "on_device after": Batches(lambda: device),
    }


def checkpoint_bytes(tmp: Path) -> tuple[int, int]:
    """(bytes without the position entries, bytes with them) of a quickstart checkpoint after 3 steps."""
    data = FashionMNISTDataModule(batch_size=128, num_workers=0)
    net = ResNet(depth=8, stem="cifar", in_channels=1, num_classes=10)
    model = ImageClassifier(net, lr=0.1)
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp), accelerator="cpu")  # fmt: skip
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp / "after.ckpt")
    ckpt = torch.load(tmp / "after.ckpt", weights_only=False)
    del ckpt["FashionMNISTDataModule"], ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    before = io.BytesIO()
    torch.save(ckpt, before)
    return len(before.getvalue()), (tmp / "after.ckpt").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40, help="batches per timed window")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/resume.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier on a small shared CPU (see scripts/bench.py --threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    made = provenance.write(
        out.parent, ["python", "-m", "scripts.bench_resume", *sys.argv[1:]], f"{out.stem}.provenance"
    )

    data = FashionMNISTDataModule(batch_size=args.batch_size, num_workers=0)
    data.setup("fit")
    runs = interleaved(args.repeats, loaders(data), warmup=2, steps=args.steps)
    rows = []
    for path in ("DataLoader", "on_device"):
        before, aa, after = runs[f"{path} before"], runs[f"{path} before (A/A)"], runs[f"{path} after"]
        floor = aa_floor(before, aa)
        # ms per batch: a ratio above 1 is slower, so compare before/after (images/s after / before)
        rows.append([path, fmt_stat(before, 2), fmt_stat(after, 2), compare(before, after, floor)])
    with tempfile.TemporaryDirectory() as tmp:
        without, with_position = checkpoint_bytes(Path(tmp))
    text = "\n".join([
        "# Resumable train loaders: time per batch and checkpoint size, before/after",
        "",
        f"`{made['command']}`. {provenance.summary(made)} Provenance: {out.stem}.provenance.json.",
        f"Fashion-MNIST quickstart transform, batch {args.batch_size}, CPU, 1 torch thread; windows of "
        f"{args.steps} batches after 2 warm-up batches, {args.repeats} repeats interleaved. Speed ratio: "
        "after/before in batches/s, median of the per-repeat ratios (min-max), beside the A/A floor of "
        "'before' built twice.",
        "",
        markdown_table(["loader", "ms/batch before", "ms/batch after", "speed after/before"], rows),
        "",
        f"Checkpoint (quickstart ResNet-8 after 3 steps): {without:,} bytes without the position, "
        f"{with_position:,} with it (+{with_position - without:,} bytes, "
        f"{100 * (with_position - without) / without:.2f}%).",
        "",
    ])  # fmt: skip
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
