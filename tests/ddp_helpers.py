"""Importable from a CLI subprocess (`tests.ddp_helpers.DumpState`): what each rank ends with."""

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

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
        state = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}  # type: ignore[union-attr]
        torch.save(state, self.out_dir / f"rank{rank}.pt")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
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
            sampler = DistributedSampler(range(self.n), self.world, rank, shuffle=True, seed=self.seed)  # type: ignore[arg-type]
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
