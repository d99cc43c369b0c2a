"""Callbacks and data importable from a CLI subprocess (`tests.ddp_helpers.DumpState`): what each rank ends
with, and a training held at a known step for a test to act on."""

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from src.data.synthetic import SyntheticDataModule


class DumpState(Callback):
    """Writes every rank's network weights and metrics when fit ends (rank files, no collectives)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        net = pl_module.net
        assert isinstance(net, torch.nn.Module), "DumpState expects an ImageClassifier-style module with .net"
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        torch.save(state, self.out_dir / f"rank{rank}.pt")
        metrics: dict[str, float | str] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics.update(world_size=trainer.world_size, global_step=trainer.global_step, host=socket.gethostname())
        (self.out_dir / f"rank{rank}.json").write_text(json.dumps(metrics))


class RankShardsSampler(Sampler[int]):
    """One process replaying a ``world``-rank DDP epoch: batch by batch, rank 0's shard, then rank 1's...

    Lightning always gives training loaders a shuffling DistributedSampler under DDP
    (seed = the global seed, reshuffled per epoch); this yields the same shards in order.
    """

    def __init__(self, n: int, world: int, batch_size: int, seed: int = 0) -> None:
        self.n, self.world, self.batch_size, self.seed, self.epoch = n, world, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        shards = []
        for rank in range(self.world):
            # DistributedSampler reads only len(dataset), which a range has; its stub wants a Dataset.
            sampler: DistributedSampler[int] = DistributedSampler(
                range(self.n),  # type: ignore[arg-type]
                self.world,
                rank,
                shuffle=True,
                seed=self.seed,
            )
            sampler.set_epoch(self.epoch)
            shards.append(list(sampler))
        for start in range(0, len(shards[0]) - self.batch_size + 1, self.batch_size):
            for shard in shards:
                yield from shard[start : start + self.batch_size]

    def __len__(self) -> int:
        return self.n


class RankOrderedSynthetic(SyntheticDataModule):
    """Synthetic data whose single-process training batches are the DDP ranks' shards, in order.

    With ``accumulate_grad_batches=world`` one process then sees the batches (and BatchNorm
    batch statistics) that the ``world`` DDP ranks see together.
    """

    def __init__(
        self, world: int, num_classes: int, image_size: int, train_size: int, val_size: int, batch_size: int
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            image_size=image_size,
            train_size=train_size,
            val_size=val_size,
            batch_size=batch_size,
        )
        self.world = world

    def train_dataloader(self) -> DataLoader:
        sampler = RankShardsSampler(len(self.train_set), self.world, self.batch_size)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler)


class RecordEnv(Callback):
    """Writes one environment variable as the training process sees it to ``<out_dir>/<run name>.txt``."""

    def __init__(self, out_dir: str, key: str) -> None:
        self.out_dir, self.key = Path(out_dir), key

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        name = Path(trainer.log_dir or "run").parent.name
        (self.out_dir / f"{name}.txt").write_text(os.environ.get(self.key, ""))


class HoldAtStep(Callback):
    """Training waits after optimizer step ``step`` until this process receives one of ``signums`` or the
    file ``release`` exists; rank 0 writes the file ``held`` as the wait starts. A test then acts at a known
    step however fast or loaded the machine: it sends its signal (which Preemption, the next callback,
    acts on at this very step) or releases the run. ``$VARS`` in the paths are expanded (one pair of files
    per Slurm array task). A run resumed from step ``step`` or later never holds.
    """

    def __init__(
        self, step: int, held: str, release: str = "", signums: tuple[int, ...] = (10, 15), timeout: float = 600
    ) -> None:  # 10: SIGUSR1, 15: SIGTERM
        self.step, self.timeout = step, timeout
        self.held, self.release = Path(os.path.expandvars(held)), os.path.expandvars(release)
        self.signums = tuple(signal.Signals(s) for s in signums)
        self.received: list[int] = []
        self.previous: dict[signal.Signals, Any] = {}

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # Listening from the start of the step, not only during the wait: under DDP a peer's signal may come
        # (sent once rank 0 holds) before this rank has reached the end of the step.
        if trainer.global_step == self.step - 1 and not self.previous:
            self.previous = {s: signal.getsignal(s) for s in self.signums}
            for signum in self.signums:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        handler = self.previous[signal.Signals(signum)]
        if callable(handler):  # Preemption's: it sets its flag, as without the hold
            handler(signum, frame)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step or not self.previous:
            return
        try:
            if trainer.is_global_zero:
                self.held.write_text(f"held at global step {trainer.global_step}\n")
            deadline = time.monotonic() + self.timeout
            while not self.received and not (self.release and Path(self.release).exists()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"held at step {self.step} for {self.timeout} s: no signal, no {self.release}")
                time.sleep(0.05)
        finally:
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)
            self.previous = {}
