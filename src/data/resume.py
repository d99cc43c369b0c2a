"""Train loaders that resume mid-epoch exactly: the very next batch, in the uninterrupted order.

Lightning saves a train loader's ``state_dict()`` in a checkpoint when it has one (and then does not
warn "your dataloader is not resumable"); the loader must skip what the epoch already served by itself
[lightning/pytorch/loops/fit_loop.py ``on_save_checkpoint``, training_epoch_loop.py ``reset``]. Two
things make that exact here, for any ``num_workers`` and any number of ranks:

- the order is a function of (seed, epoch, rank): ``EpochSampler``, torch's ``DistributedSampler``
  (one seeded shuffle per epoch, one shard per rank) that can start an epoch part-way;
- every sample's augmentation draws from torch's RNG seeded by (seed, epoch, dataset index)
  (``SeededSamples``), not from a worker's stream, so it does not depend on which worker or rank
  loads it, or on how many there are: a resume with another ``num_workers`` is exact too.

The position itself is two numbers, (epoch, batches served), counted where the batches leave the
loader: Lightning's fetcher does not read ahead of a loader with a length [loops/fetchers.py
``_PrefetchDataFetcher.__iter__``], so at any checkpoint the count is what training consumed.

Lightning restores a loader's state only when the train loader is first built after the loops are
restored; ``trainer.estimated_stepping_batches`` (the LR schedules) builds it earlier and the state is
dropped (Lightning-AI/pytorch-lightning#20550). ``ResumableTrainData`` therefore also keeps the
position in the DataModule's own checkpoint entry, which Lightning restores before any loader exists.
"""

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, index...): nearby inputs give unrelated seeds."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def run_seed() -> int:
    """The run's seed (``seed_everything``, which Lightning exports to the DDP processes as PL_GLOBAL_SEED):
    a seed sweep then varies the order and augmentation of the data, not only the initial weights."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` (for ``SeededSamples``) or plain indices,
    and whose next pass can leave out the samples a resumed epoch already served.

    A ``DistributedSampler`` subclass, so Lightning neither replaces it under DDP nor wraps it, and
    calls its ``set_epoch`` every epoch [lightning/pytorch/trainer/connectors/data_connector.py
    ``_requires_distributed_sampler``; loops/utilities.py ``_set_sampler_epoch``].
    """

    def __init__(self, size: int, num_replicas: int, rank: int, shuffle: bool, seed: int, pairs: bool) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
        self.pairs = pairs
        self.skip = 0  # samples of the next pass to leave out (one pass only)

    def __iter__(self) -> Iterator[Any]:
        epoch, skip = self.epoch, self.skip
        self.skip = 0
        rest = itertools.islice(super().__iter__(), skip, None)
        return ((epoch, i) for i in rest) if self.pairs else rest


class SeededSamples(Dataset):
    """``dataset[i]`` with torch's global RNG seeded by (seed, epoch, i): the sample's augmentation is
    the same whichever worker or process loads it. Items are ``(epoch, i)`` pairs from ``EpochSampler``
    (a plain index is loaded unseeded). In the training process itself (``num_workers=0``) the
    RNG state is put back afterwards, so the model's own draws (stochastic depth) do not depend on it."""

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, int):
            return self.dataset[item]
        epoch, i = item
        main = torch.utils.data.get_worker_info() is None
        state = torch.default_generator.get_state() if main else None
        torch.default_generator.manual_seed(derived_seed(self.seed, epoch, i))
        try:
            return self.dataset[i]
        finally:
            if state is not None:
                torch.default_generator.set_state(state)


class Position:
    """Mixin for a train loader with an ``EpochSampler`` in ``self.sampler``: counts the batches it serves
    and gives Lightning ``state_dict``/``load_state_dict``. ``trainer`` (set by ``ResumableTrainData``)
    says where Lightning ends an epoch (``limit_train_batches``)."""

    sampler: EpochSampler
    batch_size: Any  # an int (a DataLoader may hold None)
    trainer: Any = None
    _served: tuple[int, int] = (0, 0)  # (epoch, batches served in it)
    _skip_batches = 0

    def _count(self, batches: Iterable[Any], epoch: int, start: int) -> Iterator[Any]:
        self._served = (epoch, start)
        for batch in batches:
            self._served = (epoch, self._served[1] + 1)
            yield batch

    def _take_skip(self) -> int:
        """Batches the next pass leaves out (and forgets), for a loader that skips by batch itself."""
        skip, self._skip_batches = self._skip_batches, 0
        return skip

    def _shape(self) -> dict[str, int]:
        s = self.sampler
        return {"samples": len(s.dataset), "batch_size": int(self.batch_size or 1), "world_size": s.num_replicas}  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, Any]:
        epoch, batch = self._served
        per_epoch = len(self)  # type: ignore[arg-type]
        if self.trainer is not None and self.trainer.num_training_batches != float("inf"):
            per_epoch = min(per_epoch, int(self.trainer.num_training_batches))
        if batch >= per_epoch:  # saved at an epoch's end: the next one starts from its first batch
            epoch, batch = epoch + 1, 0
        return {"epoch": epoch, "batch": batch, "seed": self.sampler.seed, **self._shape()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shape = {k: state.get(k) for k in self._shape()}
        if shape != self._shape():
            rank_zero_info(
                f"Warning: the checkpoint's train-loader position is for {shape}, this run has {self._shape()}: "
                "the rest of its epoch is a new shuffle"
            )
            return
        self.sampler.seed = state["seed"]
        self.sampler.set_epoch(state["epoch"])
        self._served = (state["epoch"], state["batch"])
        self._skip_batches = state["batch"]
        self.sampler.skip = state["batch"] * int(self.batch_size or 1)


class ResumableDataLoader(Position, DataLoader):  # type: ignore[misc]  # sampler: an EpochSampler here
    """A ``DataLoader`` over ``dataset`` in ``EpochSampler`` order, each sample seeded (``SeededSamples``)."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        **kwargs: Any,
    ) -> None:
        sampler = EpochSampler(len(dataset), world_size, rank, shuffle, seed, pairs=True)
        super().__init__(SeededSamples(dataset, seed), batch_size=batch_size, sampler=sampler, **kwargs)

    def __len__(self) -> int:
        return DataLoader.__len__(self)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # The sampler skips the samples; the count starts where the sampler does.
        return self._count(DataLoader.__iter__(self), self.sampler.epoch, self._take_skip())


class ResumableTrainData:
    """DataModule mixin: the train loader's position in the DataModule's checkpoint entry, handed to the
    next train loader built. A checkpoint without one (saved before resumable loaders) resumes as
    before, with one line saying that the rest of its epoch is a new shuffle."""

    trainer: Any
    _train_loader: Position | None = None
    _resume_position: dict[str, Any] | None = None
    _resume_checked = False

    def state_dict(self) -> dict[str, Any]:
        return {} if self._train_loader is None else {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_position = state_dict.get("train_loader")

    def resumable(self, loader: Any) -> Any:
        """Register ``loader`` (a ``Position``) as the train loader and give it a restored position."""
        loader.trainer = self.trainer
        if self._resume_position is not None:
            loader.load_state_dict(self._resume_position)
            self._resume_position = None
        elif not self._resume_checked and self.trainer is not None and self.trainer.ckpt_path:
            rank_zero_info(
                f"Warning: {self.trainer.ckpt_path} holds no train-loader position (saved before resumable "
                "loaders): if it was saved mid-epoch, the rest of that epoch is a new shuffle"
            )
        self._resume_checked = True
        self._train_loader = loader
        return loader
