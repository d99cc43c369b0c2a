"""Tiny datasets written in the real on-disk formats, read by the real loading code.

CIFAR: torchvision's python-version pickles (``cifar-10-batches-py/data_batch_1..5``,
``test_batch``, ``batches.meta``; ``cifar-100-python/train``, ``test``, ``meta``).
ImageNet: an ImageFolder tree of real JPEGs written with PIL, optionally with one truncated file.
"""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def cifar_images(n: int, seed: int) -> np.ndarray:
    """Random uint8 rows of 3072 (R plane, G plane, B plane); image i's first byte is i % 256 for tracking."""
    data = np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(n) % 256
    return data


def write_cifar10(root: Path, per_batch: int = 20, test: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", per_batch, i) for i in range(1, 6)]
    for name, label, n, seed in [*batches, ("test_batch", "testing batch 1 of 1", test, 0)]:
        labels = [int(v) for v in np.arange(n) % 10]
        batch = {
            "batch_label": label,
            "labels": labels,
            "data": cifar_images(n, seed),
            "filenames": [f"img_{seed}_{j}.png" for j in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072}, f, protocol=2)
    return root


def write_cifar100(root: Path, train: int = 100, test: int = 20) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, seed in (("train", train, 1), ("test", test, 0)):
        fine = np.arange(n) % 100
        batch = {
            "filenames": [f"img_{j}.png" for j in range(n)],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": [int(v) for v in fine],
            "coarse_labels": [int(v) for v in fine // 5],
            "data": cifar_images(n, seed),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, f, protocol=2)
    return root


CLASSES = ("n01440764", "n01443537", "n01484850")
SIZES = ((40, 30), (30, 48), (36, 36), (64, 24))  # (width, height): landscape, portrait, square, wide


def write_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def write_imagefolder(root: Path, train_per_class: int = 4, val_per_class: int = 2, corrupt: bool = False) -> Path:
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; with ``corrupt`` one train JPEG is cut in half."""
    seed = 0
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for wnid in CLASSES:
            (root / split / wnid).mkdir(parents=True)
            for j in range(per_class):
                write_jpeg(root / split / wnid / f"{wnid}_{j}.JPEG", SIZES[j % len(SIZES)], seed)
                seed += 1
    if corrupt:
        path = corrupt_file(root)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return root


def corrupt_file(root: Path) -> Path:
    return root / "train" / CLASSES[1] / f"{CLASSES[1]}_1.JPEG"


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar100"))


@pytest.fixture(scope="session")
def imagenet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def imagenet_corrupt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("imagenet_corrupt"), corrupt=True)
