"""Random images and labels of any shape: for benchmarks and smoke tests, no files needed."""

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


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


class SyntheticDataModule(L.LightningDataModule):
    """Stands in for ImageNet (defaults) or any dataset: set ``image_size``, ``in_channels``, ``num_classes``."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        train_size: int = 1024,
        val_size: int = 256,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for key, value in dict(
            num_classes=num_classes, in_channels=in_channels, image_size=image_size, batch_size=batch_size
        ).items():
            if value <= 0:
                raise ValueError(f"{key}={value} must be positive")
        self.save_hyperparameters()
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.batch_size, self.num_workers = batch_size, num_workers
        shape = (in_channels, image_size, image_size)
        self.train_set = RandomImages(train_size, shape, num_classes, seed)
        self.val_set = RandomImages(val_size, shape, num_classes, seed + 1)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=train, drop_last=train, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)
