"""Batched RandAugment / TrivialAugmentWide / random erasing against torchvision's per-image transforms."""

import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torchvision.transforms import v2

from src.data.batched_augment import GEOMETRIC, BatchedAutoAugment, batched_random_erasing
from src.data.cifar import CIFAR10DataModule
from src.data.on_device import DeviceLoader
from src.models.classifier import ImageClassifier
from src.models.resnet import ResNet

REFERENCE = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}


def scene(channels: int, size: int) -> torch.Tensor:
    """A structured uint8 image (gradients, a bright square, a dark disc), so every op changes it visibly."""
    r = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    planes = [40 + 5 * xx, 30 + 6 * yy, 200 - 4 * xx - 2 * yy][:channels]
    img = torch.stack(planes)
    img[:, size // 4 : size // 2, size // 4 : size // 2] = 250
    img[:, ((yy - 0.7 * size) ** 2 + (xx - 0.7 * size) ** 2) < (size / 6) ** 2] = 10
    return img.clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
@pytest.mark.parametrize("channels,size", [(3, 32), (1, 28)])
def test_every_op_reproduces_torchvisions_uint8_kernel_per_image(policy: str, channels: int, size: int) -> None:
    """Image i with op k, bin b and sign s comes out as torchvision makes it from the same draws."""
    aug, ref = BatchedAutoAugment(policy), REFERENCE[policy]()  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (6, channels, size, size), dtype=torch.uint8, generator=g)
    x[:2] = scene(channels, size)
    x[2:4] = (x[2:4] // 3 + 60).to(torch.uint8)  # a narrow range, which AutoContrast and Equalize stretch
    bins = range(31)  # RandAugment's magnitude is a config key: every bin, as TrivialAugment's
    for k, name in enumerate(aug.ops):
        magnitudes_fn, signed = ref._AUGMENTATION_SPACE[name]
        values = magnitudes_fn(31, size, size)
        for b in bins:
            for s in (0, 1):
                n = len(x)
                got = aug.apply(x, torch.full((n,), k), torch.full((n,), b), torch.full((n,), s))
                m = 0.0 if values is None else float(values[b]) * (-1 if s and signed else 1)
                one = ref._apply_image_or_video_transform
                want = torch.stack([one(im, name, m, interpolation=ref.interpolation, fill=ref._fill) for im in x])
                diff = (got.int() - want.int()).abs()
                where = f"{name} bin {b} sign {s}"
                if name in GEOMETRIC or values is None:  # same matrices and grid: exact
                    assert torch.equal(got, want), where
                else:  # a*x + b*y in another kernel may round the other way at an integer
                    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01, where


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_the_sync_free_whole_batch_path_gives_the_same_images_as_the_subset_path(policy: str) -> None:
    """On an accelerator every op transforms the whole batch and torch.where keeps the drawn ones."""
    aug = BatchedAutoAugment(policy)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g)
    x[:64] = scene(3, 32)
    op = torch.randint(0, len(aug.ops), (256,), generator=g)
    bin_, sign = torch.randint(0, 31, (256,), generator=g), torch.randint(0, 2, (256,), generator=g)
    subsets = aug.apply(x, op, bin_, sign, subsets=True)
    assert torch.equal(subsets, aug.apply(x, op, bin_, sign, subsets=False))
    assert (subsets != x).flatten(1).any(dim=1).float().mean() > 0.7  # most images changed


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_images_of_one_batch_draw_their_own_ops_in_torchvisions_distribution(policy: str) -> None:
    n, image = 1500, scene(3, 32)
    batch = image.expand(n, -1, -1, -1).contiguous()
    ref = REFERENCE[policy]()
    # The pitfall: a torchvision v2 transform given a batch draws once, so every image gets the same op.
    same = ref(batch[:64])
    assert all(torch.equal(o, same[0]) for o in same)
    fast = BatchedAutoAugment(policy)(batch, torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    assert len({o.float().sum().item() for o in fast[:64]}) > 20  # each image drew its own
    torch.manual_seed(0)
    slow = torch.stack([ref(image) for _ in range(n)])
    # The same distribution: every output pixel's mean agrees within sampling noise (z-score), and
    # so does the share of images the round(s) left unchanged (Identity and no-op draws).
    f, s = fast.float(), slow.float()
    z = (f.mean(0) - s.mean(0)) / ((f.var(0) + s.var(0)) / n).sqrt().clamp(min=1e-3)
    assert z.abs().max() < 5.5, z.abs().max()
    unchanged = [(o == image).all(dim=(1, 2, 3)).float().mean().item() for o in (fast, slow)]
    assert abs(unchanged[0] - unchanged[1]) < 4 * math.sqrt(0.25 / n), unchanged


def test_random_erasing_draws_a_rectangle_per_image_as_torchvision_does() -> None:
    n, p = 3000, 0.6
    x = torch.ones(n, 3, 32, 32)
    fast = batched_random_erasing(x, p, value=0.0, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref = v2.RandomErasing(p=p, value=0)
    slow = torch.stack([ref(x[0]) for _ in range(n)])
    stats = []
    for out in (fast, slow):
        erased = out[:, 0] == 0
        assert torch.equal(erased, (out == 0).all(dim=1))  # the same box in every channel
        hit = erased.flatten(1).any(dim=1)
        rows, cols = erased.any(dim=2), erased.any(dim=1)  # [N, H], [N, W]
        h, w = rows.sum(1)[hit].float(), cols.sum(1)[hit].float()
        assert torch.equal(erased.flatten(1).sum(1)[hit].float(), h * w)  # a full rectangle
        top = rows.float().argmax(1)[hit]
        stats.append((hit.float().mean(), (h * w).mean() / 1024, (h / w).log().mean(), top.float().mean()))
    (pf, af, rf, tf), (ps, as_, rs, ts) = stats
    assert abs(pf - ps) < 0.04 and abs(pf - p) < 0.04  # erased share
    assert abs(af - as_) < 0.015  # mean area fraction, of U(0.02, 0.33) truncated by the fit test
    assert abs(rf - rs) < 0.08 and abs(rf) < 0.1  # log aspect ratio: symmetric around 0
    assert abs(tf - ts) < 1.0  # position
    first = fast[:64, 0] == 0
    assert len({tuple(e.nonzero()[0].tolist()) for e in first if e.any()}) > 10  # boxes differ within a batch


def test_on_device_policy_and_erasing_train_with_per_image_draws(cifar10_dir: Path, tmp_path: Path) -> None:
    cifar = partial(CIFAR10DataModule, data_dir=str(cifar10_dir), batch_size=16, val_size=20, num_workers=0)
    dm = cifar(on_device=True, auto_augment="randaugment", random_erasing=1.0)
    plain = cifar(on_device=True)
    dm.setup("fit")
    plain.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, DeviceLoader)
    one = loader.images[:1].expand(16, -1, -1, -1).contiguous()  # one image, 16 times: 16 different draws
    out = loader.augment(one, torch.Generator().manual_seed(0))
    assert len({o.sum().item() for o in out}) == 16
    assert all((o == 0).all(dim=0).any() for o in out)  # erased (p=1) to 0, the mean in standardised units
    # The policy itself is wired in: without erasing, crops and flips of one image leave its pixel
    # multiset unchanged up to the padding; RandAugment's colour ops change the values themselves.
    policy_only = cifar(on_device=True, auto_augment="randaugment", padding=0)
    policy_only.setup("fit")
    augmented = policy_only.recipe(train=True)(one, torch.Generator().manual_seed(0))
    plain_once = policy_only.recipe(train=False)(one[:1])[0]
    changed = [not torch.equal(a.flatten().sort().values, plain_once.flatten().sort().values) for a in augmented]
    assert sum(changed) >= 12  # 2 ops of 14 per image: most images get a value-changing op
    x0 = next(iter(loader))[0]
    assert torch.equal(x0, next(iter(loader))[0])  # seeded by (seed, epoch, rank): a resume replays it
    for a, b in zip(dm.val_dataloader(), plain.val_dataloader(), strict=True):  # validation is not augmented
        assert torch.equal(a[0], b[0])
    net = ResNet(depth=[1, 1], block="basic", widths=[8, 16], stem="cifar", shortcut="A", num_classes=10)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(ImageClassifier(net, lr=0.05), datamodule=dm)
    assert trainer.global_step == len(loader) > 0
