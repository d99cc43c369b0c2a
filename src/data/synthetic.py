"""Random images and labels of any shape: for benchmarks and smoke tests, no files needed."""

import math
from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.common import check_batch_sizes, check_one_batch, process_batch


class RandomImages(Dataset):
    """``length`` samples cycling over a fixed pool of random normalised images.

    A pool (not fresh noise per sample) keeps the loader cost near zero, so a
    benchmark measures the model, and makes the data the same for the same seed.
    """

    def __init__(self, length: int, shape: tuple[int, int, int], num_classes: int, seed: int, pool: int = 64) -> None:
        g = torch.Generator().manual_seed(seed)
        self.length = length
        self.images = torch.randn(min(pool, length), *shape, generator=g)
        self.labels = torch.randint(0, num_classes, (length,), generator=g)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i % len(self.images)], self.labels[i]


class DeviceBatches:
    """The batches of a ``RandomImages`` in order, gathered from a copy of it on ``device``.

    A DataLoader of fp32 ImageNet-sized images collates and copies ~150 MB per batch of 256 on the
    host, which caps a fast GPU below what the network alone runs at. This costs one on-device
    gather per batch: a throughput benchmark then measures the training step, as MLPerf-style
    loaders (DALI, data already on the GPU) let it.
    """

    def __init__(self, data: RandomImages, batch_size: int, device: torch.device | str, drop_last: bool) -> None:
        self.device = torch.device(device)
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
        self.length, self.batch_size, self.drop_last = len(data), batch_size, drop_last

    def __len__(self) -> int:
        return self.length // self.batch_size if self.drop_last else math.ceil(self.length / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(len(self)):
            idx = torch.arange(i * self.batch_size, min((i + 1) * self.batch_size, self.length), device=self.device)
            yield self.images[idx % len(self.images)], self.labels[idx]


class SyntheticDataModule(L.LightningDataModule):
    """Stands in for ImageNet (defaults) or any dataset: set ``image_size``, ``in_channels``, ``num_classes``.

    ``on_device``: serve the batches from a copy on the training device (``DeviceBatches``), so a
    benchmark is not bound by host-side collation and copies.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        train_size: int = 1024,
        val_size: int = 256,
        batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        on_device: bool = False,
        global_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        for key, value in dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size).items():
            if value <= 0:
                raise ValueError(f"{key}={value} must be positive")
        check_batch_sizes(batch_size, global_batch_size)
        self.save_hyperparameters()
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.batch_size_arg, self.global_batch_size = batch_size, global_batch_size
        self.batch_size = process_batch(batch_size, global_batch_size, None, 32)
        self.num_workers, self.on_device = num_workers, on_device
        shape = (in_channels, image_size, image_size)
        self.train_set = RandomImages(train_size, shape, num_classes, seed)
        self.val_set = RandomImages(val_size, shape, num_classes, seed + 1)

    def setup(self, stage: str | None = None) -> None:
        self.batch_size = process_batch(self.batch_size_arg, self.global_batch_size, self.trainer, 32)

    def _loader(self, dataset: RandomImages, train: bool) -> DataLoader | DeviceBatches:
        if self.on_device:
            device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
            return DeviceBatches(dataset, self.batch_size, device, drop_last=train)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=train, drop_last=train, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        world = self.trainer.world_size if self.trainer else 1
        check_one_batch(len(self.train_set), self.batch_size, world, "SyntheticDataModule(train_size)")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.val_set, train=False)

    def predict_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.val_set, train=False)
