"""What the small in-memory datasets (Fashion-MNIST, CIFAR) share.

They fit in memory as one uint8 tensor ``[N, C, H, W]``, so a DataModule holds the
tensors, splits a seeded validation set off the training set, and augments each
image with torchvision's v2 transforms on the way out of the DataLoader, or, with
``on_device=True``, keeps each split on the training device and augments whole
batches there (``src/data/on_device.py``; same recipe, same statistics).
"""

import os
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from src.choices import check_choices
from src.data.batched_augment import check_augmentation
from src.data.on_device import DeviceLoader, PadCropFlipNormalize


class TensorImageDataset(Dataset):
    """Images (uint8 ``[N, C, H, W]``) and labels, with an optional per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


def seeded_split(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) index tensors over ``range(n)``; the same for the same seed."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size={val_size} must be in [0, {n}) for a training set of {n} images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def check_one_batch(n: int, batch_size: int, world_size: int, where: str) -> None:
    """Refuse a training set too small for one batch per process: with drop_last nothing would train,
    and the run would still end with a test accuracy of the untrained network."""
    per_process = n // max(1, world_size)
    if per_process < batch_size:
        share = f" ({per_process} per process on {world_size})" if world_size > 1 else ""
        raise ValueError(
            f"{where}: {n} training images{share} make no batch of data.batch_size={batch_size}; "
            "lower the batch size or use more data"
        )


def per_device_batch(global_batch: int, trainer: L.Trainer) -> int:
    """``global_batch`` split over the processes and gradient-accumulation steps; a remainder is an error.

    The papers fix the global batch (ImageNet 256, CIFAR 128): set ``global_batch_size`` and the same
    config trains at that batch, and so at the papers' lr, on 1, 4 or 8 GPUs.
    """
    parts = trainer.world_size * trainer.accumulate_grad_batches
    if global_batch <= 0 or global_batch % parts:
        raise ValueError(
            f"data.global_batch_size={global_batch} does not split evenly over {trainer.world_size} process(es) "
            f"x {trainer.accumulate_grad_batches} accumulation step(s)"
        )
    return global_batch // parts


def process_batch(
    batch_size: int | None, global_batch_size: int | None, trainer: L.Trainer | None, default: int
) -> int:
    """The per-process batch: an explicit ``batch_size`` wins; else ``global_batch_size`` split over the
    processes (shipped configs set only that, so adding GPUs never changes the recipe); else ``default``."""
    if batch_size is not None:
        return batch_size
    if global_batch_size is None:
        return default
    return global_batch_size if trainer is None else per_device_batch(global_batch_size, trainer)


def check_batch_sizes(batch_size: int | None, global_batch_size: int | None) -> None:
    for key, value in (("batch_size", batch_size), ("global_batch_size", global_batch_size)):
        if value is not None and value <= 0:
            raise ValueError(f"{key}={value} must be positive")


def default_num_workers() -> int:
    """Leave a core for the training process; on a 2-core laptop that is one worker."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class InMemoryImageDataModule(L.LightningDataModule):
    """Base for datasets held as tensors. Subclasses set the class attributes and ``load``.

    ``val_size`` images are split off the training set with ``seed`` for validation
    (model selection never sees the test split); ``val_size=0`` validates on the
    official test split instead, as the CIFAR papers' final runs do.

    ``normalize``: ``per_channel`` subtracts the class's ``mean`` and divides by its
    ``std`` (padding is black); ``per_pixel_mean`` subtracts the mean image of the
    training images, as the ResNet paper does on CIFAR (padding is the mean).
    ``on_device``: serve batches from a copy of each split on the training device,
    augmented there (no workers; for datasets that fit in device memory).
    Beyond the paper (training only): ``auto_augment`` (``randaugment`` with 2 ops at
    ``randaugment_magnitude``, or ``trivialaugment``) on the uint8 image, and ``random_erasing``
    (probability per image) after standardising; with ``on_device`` both run batched, each image
    drawing its own parameters.
    ``global_batch_size`` fixes the batch per optimizer step over processes and gradient accumulation
    (the paper's 128 on 1 or 2 GPUs alike); an explicit ``batch_size`` (per process) wins over it;
    with neither, 128 per process.
    """

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int | None = None,
        val_size: int = 5000,
        seed: int = 0,
        global_batch_size: int | None = None,
        augment: bool = True,
        padding: int = 4,
        normalize: Literal["per_channel", "per_pixel_mean"] = "per_channel",
        on_device: bool = False,
        auto_augment: Literal["none", "randaugment", "trivialaugment"] = "none",
        randaugment_magnitude: int = 9,
        random_erasing: float = 0.0,
        num_workers: int | None = None,
        pin_memory: bool = True,
        download: bool = True,
    ) -> None:
        super().__init__()
        check_batch_sizes(batch_size, global_batch_size)
        if padding < 0:
            raise ValueError(f"padding={padding} must be >= 0")
        check_choices(InMemoryImageDataModule.__init__, locals())
        check_augmentation(random_erasing, randaugment_magnitude)
        self.save_hyperparameters()
        self.data_dir = data_dir or self.default_data_dir()
        self.batch_size_arg, self.global_batch_size = batch_size, global_batch_size
        self.batch_size = process_batch(batch_size, global_batch_size, None, 128)
        self.val_size, self.seed = val_size, seed
        self.augment, self.padding, self.download = augment, padding, download
        self.normalize, self.on_device = normalize, on_device
        self.auto_augment, self.randaugment_magnitude, self.random_erasing = (
            auto_augment,
            randaugment_magnitude,
            random_erasing,
        )
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.pin_memory = pin_memory
        # [C, 1, 1], or the [C, H, W] mean image of the training images (computed in setup)
        self.norm_mean = torch.tensor(self.mean).view(-1, 1, 1) if normalize == "per_channel" else None
        self.train_set: TensorImageDataset | None = None
        self.val_set: TensorImageDataset | None = None
        self.test_set: TensorImageDataset | None = None

    @staticmethod
    def default_data_dir() -> str:
        return "./data"

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (uint8 images [N, C, H, W], int64 labels) of the train or test split."""
        raise NotImplementedError

    def recipe(self, train: bool) -> PadCropFlipNormalize:
        """The augmentation (train) or plain normalisation (eval) shared by both loaders."""
        if self.norm_mean is None:
            raise RuntimeError("setup() has not been called: the normalisation is not known yet")
        per_channel = self.normalize == "per_channel"
        std = torch.tensor(self.std if per_channel else (1.0,) * self.in_channels).view(-1, 1, 1)
        fill = tuple(-m / s for m, s in zip(self.mean, self.std, strict=True)) if per_channel else (0.0,) * len(std)
        aug = train and self.augment
        return PadCropFlipNormalize(
            self.image_size, self.norm_mean, std, fill, padding=self.padding if aug else 0, flip=aug,
            policy=self.auto_augment if aug else "none", magnitude=self.randaugment_magnitude,
            erasing=self.random_erasing if aug else 0.0,
        )  # fmt: skip

    def eval_transform(self) -> v2.Transform:
        return self.recipe(train=False).per_image()

    def train_transform(self) -> v2.Transform:
        return self.recipe(train=True).per_image()

    def setup(self, stage: str | None = None) -> None:
        self.batch_size = process_batch(self.batch_size_arg, self.global_batch_size, self.trainer, 128)
        # A per-pixel mean is a statistic of the training images, which the test split needs too.
        if self.train_set is None and (stage in ("fit", "validate", None) or self.norm_mean is None):
            images, labels = self.load(train=True)
            tr, va = seeded_split(len(images), self.val_size, self.seed) if self.val_size else (None, None)
            train_images = images if tr is None else images[tr]
            if self.normalize == "per_pixel_mean":
                self.norm_mean = train_images.float().mean(0) / 255
            self.train_set = TensorImageDataset(
                train_images, labels if tr is None else labels[tr], self.train_transform()
            )
            if va is not None:
                self.val_set = TensorImageDataset(images[va], labels[va], self.eval_transform())
        if stage in ("test", "predict", None) or not self.val_size:
            if self.test_set is None:
                self.test_set = TensorImageDataset(*self.load(train=False), transform=self.eval_transform())
            if not self.val_size:
                self.val_set = self.test_set

    def _loader(self, dataset: TensorImageDataset | None, train: bool) -> DataLoader | DeviceLoader:
        if dataset is None:
            raise RuntimeError("setup() has not been called for this stage")
        if self.on_device:
            trainer = self.trainer
            return DeviceLoader(
                dataset.images,
                dataset.labels,
                self.recipe(train),
                self.batch_size,
                device=trainer.strategy.root_device if trainer else "cpu",
                shuffle=train,
                drop_last=train,
                seed=self.seed,
                rank=trainer.global_rank if trainer else 0,
                world_size=trainer.world_size if trainer else 1,
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    @property
    def val_is_test(self) -> bool:
        """Whether validation runs on the test split (``val_size: 0``): a "best" checkpoint is then biased."""
        return not self.val_size

    def train_dataloader(self) -> DataLoader | DeviceLoader:
        if self.train_set is not None:
            world = self.trainer.world_size if self.trainer else 1
            check_one_batch(len(self.train_set), self.batch_size, world, f"{type(self).__name__}({self.data_dir})")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | DeviceLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader | DeviceLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader | DeviceLoader:
        return self._loader(self.test_set, train=False)
