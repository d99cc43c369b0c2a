"""The small-image recipe written once, run per image (DataLoader) or batched on the training device.

Fashion-MNIST and CIFAR fit in accelerator memory as uint8 (CIFAR-10: 150 MB). ``DeviceLoader``
keeps the whole split there as one tensor and augments a batch with a few tensor ops, so no
worker processes, host-to-device copies or per-image Python calls remain. ``PadCropFlipNormalize``
holds the one description of the recipe and gives both implementations, side by side:
``per_image()`` (torchvision v2, for the DataLoader) and ``__call__`` (a whole batch at once).
"""

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import to_dtype

from src.data.batched_augment import BatchedAutoAugment, Policy, batched_random_erasing, per_image_policy
from src.data.resume import EpochSampler, Position, derived_seed


class Standardize(v2.Transform):
    """``(x - mean) / std`` with broadcastable tensors: per channel ``[C,1,1]`` or per pixel ``[C,H,W]``.

    v2.Normalize only takes per-channel sequences; the paper's CIFAR recipe subtracts a mean image.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        return (inpt - self.mean) / self.std


@dataclass
class PadCropFlipNormalize:
    """Scale uint8 to [0, 1], standardise, pad by ``padding`` with ``fill``, random crop back, h-flip.

    The ResNet paper (Sec. 4.2): "4 pixels are padded on each side, and a 32x32 crop is randomly
    sampled from the padded image or its horizontal flip". Padding comes after standardising so a
    per-pixel mean image stays aligned with its pixels; ``fill`` is per channel, in standardised
    units (0 = the mean, as in the paper; ``-mean/std`` = black, as padding the uint8 image does).
    With ``padding=0`` and ``flip=False`` this is just the evaluation transform.
    """

    size: int
    mean: torch.Tensor  # [C, 1, 1] or [C, H, W], in [0, 1] units
    std: torch.Tensor  # [C, 1, 1]
    fill: tuple[float, ...]
    padding: int = 0
    flip: bool = False
    # Beyond the paper: an augmentation policy on the uint8 image ("randaugment": 2 ops at ``magnitude``;
    # "trivialaugment"), and random erasing with this probability (torchvision per image in the DataLoader,
    # ``src/data/batched_augment.py`` on a batch, each image with its own draws).
    policy: str = "none"
    magnitude: int = 9
    erasing: float = 0.0
    fill_tensor: torch.Tensor | None = dataclasses.field(default=None, repr=False)  # ``fill`` as [1, C, 1, 1]
    batched_policy: BatchedAutoAugment | None = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.policy != "none":  # built once: it caches its op tables per image size and device
            self.batched_policy = BatchedAutoAugment(cast(Policy, self.policy), num_ops=2, magnitude=self.magnitude)

    def to(self, device: torch.device | str) -> "PadCropFlipNormalize":
        """A copy whose statistics live on ``device``. Copying them per batch instead would cost three
        host-to-device copies, and a copy from pageable host memory waits for the device to drain."""
        fill = torch.tensor(self.fill, dtype=torch.float32).view(1, -1, 1, 1)
        return dataclasses.replace(
            self, mean=self.mean.to(device), std=self.std.to(device), fill_tensor=fill.to(device)
        )

    def per_image(self) -> v2.Compose:
        """The torchvision v2 twin of ``__call__``, applied to one ``[C, H, W]`` uint8 image at a time."""
        ops = per_image_policy(self.policy, self.magnitude)
        ops += [v2.ToDtype(torch.float32, scale=True), Standardize(self.mean, self.std)]
        if self.padding:
            ops.append(v2.RandomCrop(self.size, padding=self.padding, fill=list(self.fill)))
        if self.flip:
            ops.append(v2.RandomHorizontalFlip())
        if self.erasing:  # erased pixels become 0: the mean, in standardised units
            ops.append(v2.RandomErasing(p=self.erasing, value=0))
        return v2.Compose(ops)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a uint8 batch ``[B, C, H, W]`` where it lives; each image draws its own ops, crop and flip."""
        if self.batched_policy is not None:
            x = self.batched_policy(x, generator)
        x = (to_dtype(x, torch.float32, scale=True) - self.mean.to(x.device)) / self.std.to(x.device)  # no-op .to()
        if self.padding or self.flip:
            x = self._crop_flip(x, generator)
        if self.erasing:  # erased pixels become 0: the mean, in standardised units
            x = batched_random_erasing(x, self.erasing, value=0.0, generator=generator)
        return x

    def _crop_flip(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, c, h, w = x.shape
        p, dev = self.padding, x.device
        if p:  # pad with a per-channel constant (written, not added: bit-identical to v2.RandomCrop)
            fill = self.fill_tensor if self.fill_tensor is not None else torch.tensor(self.fill).view(1, c, 1, 1)
            padded = fill.to(dev).repeat(b, 1, h + 2 * p, w + 2 * p)
            padded[:, :, p : p + h, p : p + w] = x
            x = padded
        # Same distributions as v2.RandomCrop (top-left uniform over the 2p+1 positions) and
        # v2.RandomHorizontalFlip (p = 0.5), drawn for the whole batch at once.
        top = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
        left = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
        cols = torch.arange(w, device=dev).expand(b, w)
        if self.flip:
            flipped = torch.rand(b, device=dev, generator=generator) < 0.5
            cols = torch.where(flipped[:, None], cols.flip(1), cols)
        rows = top[:, None] + torch.arange(h, device=dev)  # [B, H]
        cols = left[:, None] + cols  # [B, W]
        batch = torch.arange(b, device=dev)[:, None, None, None]
        channel = torch.arange(c, device=dev)[None, :, None, None]
        return x[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class DeviceLoader(Position):
    """Batches ``(x, y)`` from a split held as one uint8 tensor on ``device``, augmented there.

    Shuffling and DDP sharding are torch's ``DistributedSampler`` (seeded, reshuffled by
    ``set_epoch``, equal-length shards padded by wrap-around; ``EpochSampler``), exposed as
    ``.sampler`` so Lightning calls ``set_epoch`` on it every epoch just as for a DataLoader.
    Each batch's augmentation draws from a generator seeded by (seed, epoch, rank, batch): ranks
    draw different crops, and a run resumed mid-epoch (``Position``) continues with the very
    batch the uninterrupted run would have drawn next.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        augment: PadCropFlipNormalize,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        self.device = torch.device(device)
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.augment, self.batch_size, self.drop_last = augment.to(self.device), batch_size, drop_last
        self.rank = rank
        self.batch_sampler = None  # as on a DataLoader: Lightning reads both attributes
        self.sampler = EpochSampler(len(images), world_size, rank, shuffle, seed, pairs=False)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, seed, start = self.sampler.epoch, self.sampler.seed, self._take_skip()
        self.sampler.skip = 0  # this loader skips by batch itself
        order = torch.tensor(list(self.sampler), device=self.device)
        generator = torch.Generator(device=self.device)
        self._served = (epoch, start)
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            generator.manual_seed(derived_seed(seed, epoch, self.rank, i))  # a host-side call: no device sync
            batch = self.augment(self.images[idx], generator), self.labels[idx]
            self._served = (epoch, i + 1)
            yield batch
