"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from torchvision's on-disk format.

``data_dir`` is torchvision's root (holding ``cifar-10-batches-py/`` or ``cifar-100-python/``)
or that folder itself. The batches are read with a small pickle reader of our own, because
torchvision's classes check the md5 of every file and reject anything but the official
archive, with a message that names no file; ours names the file that is missing or broken.
torchvision still does the download (``download=True``) for machines with internet.
"""

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.data.common import InMemoryImageDataModule


def read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch: a dict with ``data`` (uint8 N x 3072, RGB planes) and ``label_key``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        with open(path, "rb") as f:
            batch: Any = pickle.load(f, encoding="latin1")  # the official files are Python 2 pickles
    except Exception as e:  # unpickling a broken file can raise almost anything: say which file
        raise ValueError(f"{path}: truncated or not a CIFAR batch pickle ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: expected a dict with 'data' and {label_key!r}, found {keys}")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(
            f"{path}: 'data' is {data.dtype} {data.shape} with {len(labels)} labels; "
            "expected uint8 [N, 3072] and N labels"
        )
    if len(labels) and not (labels.min() >= 0 and labels.max() < num_classes):
        raise ValueError(f"{path}: labels span [{labels.min()}, {labels.max()}], outside [0, {num_classes})")
    images = torch.from_numpy(data.copy()).view(-1, 3, 32, 32)
    return images, torch.from_numpy(labels.astype(np.int64))


class CIFAR10DataModule(InMemoryImageDataModule):
    """50k train (``val_size`` of them held out, seeded: 45k/5k as in the paper's analysis) / 10k test, 32x32 RGB."""

    num_classes = 10
    in_channels = 3
    image_size = 32
    # Per-channel statistics of the 50k training images (normalize=per_channel).
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"

    def root(self) -> Path:
        """The batch folder: ``data_dir/<folder>`` (torchvision's root) or ``data_dir`` itself."""
        data_dir = Path(str(self.data_dir))
        return data_dir if data_dir.name == self.folder else data_dir / self.folder

    def how_to_get(self) -> str:
        return (
            f"keep data.download=true on a machine with internet, or extract the official python-version archive "
            f"(https://www.cs.toronto.edu/~kriz/cifar.html) so that {self.root()}/ holds "
            f"{', '.join(self.train_files + self.test_files)}"
        )

    def prepare_data(self) -> None:
        missing = [name for name in self.train_files + self.test_files if not (self.root() / name).is_file()]
        if not missing:
            return
        if not self.download:
            raise FileNotFoundError(f"{self.root() / missing[0]} not found (download=false); {self.how_to_get()}")
        import torchvision.datasets

        dataset_cls = torchvision.datasets.CIFAR10 if self.num_classes == 10 else torchvision.datasets.CIFAR100
        try:
            dataset_cls(str(self.root().parent), train=True, download=True)
        except Exception as e:  # no network, proxy, disk full: say what to do instead
            raise RuntimeError(f"downloading into {self.root().parent} failed ({e}); {self.how_to_get()}") from e

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for name in self.train_files if train else self.test_files:
            try:
                parts.append(read_cifar_batch(self.root() / name, self.label_key, self.num_classes))
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{e}; {self.how_to_get()}") from e
        images, labels = zip(*parts, strict=True)
        return torch.cat(images), torch.cat(labels)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 with its 100 fine labels; same split and recipe as CIFAR-10."""

    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
