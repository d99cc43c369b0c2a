"""Fashion-MNIST (Xiao et al. 2017) from the official idx files.

The files are read where they are: ``data_dir`` (or its ``FashionMNIST/raw``, where
torchvision's download puts them), gzipped or not. Without ``data_dir`` the Debian
package path ``/usr/share/datasets/fashion-mnist`` is used when present, else ``./data``.
"""

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from src.data.common import InMemoryImageDataModule

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist), "
    "keep data.download=true on a machine with internet, or copy the four official "
    "idx files from https://github.com/zalandoresearch/fashion-mnist into data_dir"
)
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> torch.Tensor:
    """Read one idx file (optionally .gz); a truncated or malformed file names itself."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # EOFError: gzip stream cut short
        raise ValueError(f"{path}: cannot read ({e}); {HOW_TO_GET}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file of unsigned bytes (bad magic {data[:4].hex()}); {HOW_TO_GET}")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"{path}: truncated or corrupt, {len(data)} bytes where shape {shape} needs {expected}; {HOW_TO_GET}"
        )
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy())


def find_file(data_dir: Path, name: str) -> Path:
    for folder in (data_dir, data_dir / "FashionMNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{data_dir / name}[.gz] not found (also looked in FashionMNIST/raw); {HOW_TO_GET}")


class FashionMNISTDataModule(InMemoryImageDataModule):
    """60k train (``val_size`` of them held out, seeded) / official 10k test, 28x28 grey, 10 classes."""

    num_classes = 10
    in_channels = 1
    image_size = 28
    # Per-channel statistics of the 60k official training images (checked in the tests).
    mean = (0.2860,)
    std = (0.3530,)

    @staticmethod
    def default_data_dir() -> str:
        return DEBIAN_DIR if os.path.isdir(DEBIAN_DIR) else "./data"

    def prepare_data(self) -> None:
        root = Path(str(self.data_dir))
        try:
            for names in FILES.values():
                for name in names:
                    find_file(root, name)
            return
        except FileNotFoundError:
            if not self.download:
                raise
        from torchvision.datasets import FashionMNIST

        try:
            for train in (True, False):
                FashionMNIST(str(root), train=train, download=True)
        except Exception as e:  # no network, proxy, disk full: say what to do instead
            raise RuntimeError(f"downloading Fashion-MNIST into {root} failed ({e}); {HOW_TO_GET}") from e

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        root = Path(str(self.data_dir))
        image_file, label_file = (find_file(root, name) for name in FILES[train])
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{image_file} holds {tuple(images.shape)} and {label_file} holds {tuple(labels.shape)}: "
                "expected [N, 28, 28] images and N labels"
            )
        return images.unsqueeze(1), labels.long()
