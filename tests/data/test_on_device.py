"""The device-resident fast path against the DataLoader path it replaces."""

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from src.data.cifar import CIFAR10DataModule
from src.data.on_device import DeviceLoader, PadCropFlipNormalize
from src.models.classifier import ImageClassifier
from src.models.resnet import ResNet


def cifar(data_dir: Path, **kwargs) -> CIFAR10DataModule:
    args = dict(data_dir=str(data_dir), batch_size=16, val_size=20, num_workers=0)
    dm = CIFAR10DataModule(**{**args, **kwargs})
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("normalize", ["per_channel", "per_pixel_mean"])
def test_eval_batches_are_identical_to_the_dataloader_path(cifar10_dir: Path, normalize: str) -> None:
    slow, fast = cifar(cifar10_dir, normalize=normalize), cifar(cifar10_dir, normalize=normalize, on_device=True)
    fast_loader = fast.val_dataloader()
    assert isinstance(slow.val_dataloader(), DataLoader) and isinstance(fast_loader, DeviceLoader)
    slow_batches, fast_batches = list(slow.val_dataloader()), list(fast_loader)
    assert len(slow_batches) == len(fast_batches) == len(fast_loader) == 2  # 20 images, batch 16, keeps the rest
    for (xs, ys), (xf, yf) in zip(slow_batches, fast_batches, strict=True):
        assert xf.dtype == torch.float32 and xf.shape == xs.shape
        assert torch.equal(xs, xf) and torch.equal(ys, yf)


def candidates(image: torch.Tensor, recipe: PadCropFlipNormalize) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every output torchvision's pad / crop / hflip can make of one standardised image."""
    p = recipe.padding
    padded = TF.pad(image, [p], fill=list(recipe.fill))
    out = {}
    for top in range(2 * p + 1):
        for left in range(2 * p + 1):
            crop = TF.crop(padded, top, left, recipe.size, recipe.size)
            out[top, left, False], out[top, left, True] = crop, TF.horizontal_flip(crop)
    return out


def decode(outputs: torch.Tensor, cands: dict[tuple[int, int, bool], torch.Tensor]) -> list[tuple[int, int, bool]]:
    """Which (top, left, flip) made each output; fails unless it is exactly one of the candidates."""
    keys = list(cands)
    stacked = torch.stack([cands[k] for k in keys]).flatten(1)
    direction = torch.randn(stacked.shape[1], dtype=torch.float64)
    proj_c, proj_o = stacked.double() @ direction, outputs.flatten(1).double() @ direction
    found = []
    for out, proj in zip(outputs.flatten(1), proj_o, strict=True):
        k = int((proj_c - proj).abs().argmin())
        assert torch.equal(out, stacked[k]), "output is not a pad-crop-flip of its input"
        found.append(keys[k])
    return found


@pytest.mark.parametrize("normalize", ["per_channel", "per_pixel_mean"])
def test_train_augmentation_matches_torchvision_exactly_and_in_distribution(cifar10_dir: Path, normalize: str) -> None:
    """Both paths only ever produce torchvision crops/flips, with the same (uniform) statistics."""
    dm = cifar(cifar10_dir, normalize=normalize)
    recipe = dm.recipe(train=True)
    assert (recipe.padding, recipe.flip) == (4, True)
    assert dm.train_set is not None
    source = dm.train_set.images[3]
    cands = candidates(dm.recipe(train=False)(source[None])[0], recipe)
    n = 1800
    fast = recipe(source[None].expand(n, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))
    per_image = recipe.per_image()
    torch.manual_seed(0)
    slow = torch.stack([per_image(source) for _ in range(n)])
    for outputs in (fast, slow):
        drawn = torch.tensor([(t, left, f) for t, left, f in decode(outputs, cands)], dtype=torch.float64)
        for column in (0, 1):  # top and left offsets: uniform over 0..8
            freq = torch.bincount(drawn[:, column].long(), minlength=9) / n
            assert (freq - 1 / 9).abs().max() < 0.035, freq
        assert abs(drawn[:, 2].mean().item() - 0.5) < 0.05
    # And every output pixel's mean agrees between the paths, within sampling noise (z-score).
    z = (fast.mean(0) - slow.mean(0)) / ((fast.var(0) + slow.var(0)) / n).sqrt()
    assert z.abs().max() < 5.5, z.abs().max()


def index_loader(n: int, **kwargs) -> DeviceLoader:
    """Labels are the image indices, so a batch's labels say which images it holds."""
    recipe = PadCropFlipNormalize(4, torch.zeros(1, 1, 1), torch.ones(1, 1, 1), (0.0,))
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return DeviceLoader(images, torch.arange(n), recipe, **kwargs)


def epoch(loader: DeviceLoader, number: int) -> torch.Tensor:
    loader.sampler.set_epoch(number)
    return torch.cat([y for _, y in loader])


def test_shuffle_is_seeded_per_epoch_and_covers_the_data() -> None:
    a, b = index_loader(50, batch_size=8, shuffle=True, seed=1), index_loader(50, batch_size=8, shuffle=True, seed=1)
    e0, e1 = epoch(a, 0), epoch(a, 1)
    assert len(a) == 7 and len(e0) == 50 and sorted(e0.tolist()) == list(range(50))
    assert not torch.equal(e0, e1) and sorted(e1.tolist()) == list(range(50))
    assert torch.equal(e0, epoch(b, 0)) and torch.equal(e1, epoch(b, 1))  # same seed, same epochs
    assert not torch.equal(e0, epoch(index_loader(50, batch_size=8, shuffle=True, seed=2), 0))
    dropped = index_loader(50, batch_size=8, shuffle=True, seed=1, drop_last=True)
    assert len(dropped) == 6 and len(epoch(dropped, 0)) == 48
    assert torch.equal(epoch(index_loader(50, batch_size=8), 0), torch.arange(50))  # eval: in order


@pytest.mark.parametrize("n", [40, 41])
def test_ddp_shards_are_disjoint_equal_and_cover_the_data(n: int) -> None:
    shards = [epoch(index_loader(n, batch_size=4, shuffle=True, rank=r, world_size=2), 3) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == (n + 1) // 2  # equal: no rank waits for the other
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(n))
    if n % 2 == 0:
        assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_images_are_augmented_where_they_live_and_draws_depend_on_epoch(cifar10_dir: Path) -> None:
    loader = cifar(cifar10_dir, on_device=True).train_dataloader()
    assert isinstance(loader, DeviceLoader) and loader.images.dtype == torch.uint8
    assert loader.images.device == torch.device("cpu")  # no trainer: the default device
    x0, y0 = next(iter(loader))
    assert x0.shape == (16, 3, 32, 32) and y0.dtype == torch.int64
    assert torch.equal(x0, next(iter(loader))[0])  # same epoch, same draws (resumable)
    loader.sampler.set_epoch(1)
    assert not torch.equal(x0, next(iter(loader))[0])


def test_lightning_trains_on_device_and_sets_the_epoch(cifar10_dir: Path, tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar10_dir), batch_size=16, val_size=20, on_device=True)
    net = ResNet(depth=[1, 1], block="basic", widths=[8, 16], stem="cifar", shortcut="A", num_classes=10)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(ImageClassifier(net, schedule="constant"), datamodule=dm)
    loader = trainer.train_dataloader
    assert isinstance(loader, DeviceLoader)
    assert loader.sampler.epoch == 1  # Lightning called set_epoch as it does for a DataLoader's sampler
    assert trainer.global_step == 2 * (80 // 16)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
