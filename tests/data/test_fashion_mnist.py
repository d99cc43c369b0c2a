import gzip
import shutil
from pathlib import Path

import pytest
import torch

from src.data.fashion_mnist import FILES, FashionMNISTDataModule, read_idx


@pytest.fixture(scope="module")
def fmnist(fmnist_dir: Path) -> FashionMNISTDataModule:
    dm = FashionMNISTDataModule(data_dir=str(fmnist_dir), batch_size=256, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return dm


def test_official_splits_and_seeded_disjoint_validation(fmnist: FashionMNISTDataModule, fmnist_dir: Path) -> None:
    assert fmnist.train_set is not None and fmnist.val_set is not None and fmnist.test_set is not None
    assert (len(fmnist.train_set), len(fmnist.val_set), len(fmnist.test_set)) == (55000, 5000, 10000)
    assert fmnist.train_set.images.shape[1:] == (1, 28, 28) and fmnist.train_set.images.dtype == torch.uint8
    # the test split is the official t10k file, untouched
    official = read_idx(fmnist_dir / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(fmnist.test_set.images[:, 0], official)
    # train and val are disjoint and together are the 60k training images
    all_train = read_idx(fmnist_dir / "train-images-idx3-ubyte.gz").flatten(1)
    rows = torch.cat([fmnist.train_set.images, fmnist.val_set.images]).flatten(1)
    assert torch.equal(rows.sort(0).values, all_train.sort(0).values)
    again = FashionMNISTDataModule(data_dir=str(fmnist_dir), num_workers=0)
    again.setup("fit")
    assert again.val_set is not None
    assert torch.equal(again.val_set.labels, fmnist.val_set.labels)
    other = FashionMNISTDataModule(data_dir=str(fmnist_dir), num_workers=0, seed=1)
    other.setup("fit")
    assert other.val_set is not None
    assert not torch.equal(other.val_set.images, fmnist.val_set.images)
    # every class is present in the validation split, roughly balanced
    counts = torch.bincount(fmnist.val_set.labels, minlength=10)
    assert counts.min() > 400


def test_normalisation_constants_are_the_training_set_statistics(fmnist_dir: Path) -> None:
    images = read_idx(fmnist_dir / "train-images-idx3-ubyte.gz").float() / 255
    assert images.mean().item() == pytest.approx(FashionMNISTDataModule.mean[0], abs=1e-3)
    assert images.std().item() == pytest.approx(FashionMNISTDataModule.std[0], abs=1e-3)


def test_eval_batches_are_normalised_and_train_batches_augmented(fmnist: FashionMNISTDataModule) -> None:
    x, y = next(iter(fmnist.val_dataloader()))
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert fmnist.val_set is not None and fmnist.train_set is not None  # the fixture ran setup("fit")
    expected = (fmnist.val_set.images[:256].float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(x, expected)
    assert abs(x.mean().item()) < 0.1 and 0.9 < x.std().item() < 1.1
    # augmentation: padding 4 + random crop shifts content, flips mirror it; same image twice differs
    ds = fmnist.train_set
    views = torch.stack([ds[0][0] for _ in range(20)])
    assert len({v.numpy().tobytes() for v in views}) > 5
    zero = (0 - 0.2860) / 0.3530  # value of a padded (black) pixel after normalisation
    assert ((views - zero).abs() < 1e-5).float().mean() > (ds.images[0] == 0).float().mean() * 0.9


def test_uncompressed_files_in_torchvision_layout(tmp_path: Path, fmnist_dir: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for names in FILES.values():
        for name in names:
            with gzip.open(fmnist_dir / f"{name}.gz") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), num_workers=0, download=False)
    dm.setup("test")
    assert dm.test_set is not None and len(dm.test_set) == 10000


def test_missing_file_names_the_file_and_how_to_get_it(tmp_path: Path) -> None:
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\[\.gz\] not found.*dataset-fashion-mnist"):
        dm.prepare_data()


@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_file_names_the_file(tmp_path: Path, fmnist_dir: Path, compressed: bool) -> None:
    for name in FILES[False]:
        shutil.copy(fmnist_dir / f"{name}.gz", tmp_path / f"{name}.gz")
    victim = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = victim.read_bytes()
    if compressed:
        victim.write_bytes(data[: len(data) // 2])  # the gzip stream ends early
    else:
        victim.unlink()
        victim = tmp_path / "t10k-images-idx3-ubyte"
        victim.write_bytes(gzip.decompress(data)[:-100])  # 100 pixels short
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(ValueError, match=str(victim)):
        dm.setup("test")


def test_not_an_idx_file(tmp_path: Path) -> None:
    bogus = tmp_path / "t10k-labels-idx1-ubyte"
    bogus.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(bogus)
