"""ImageNet DataModule on a tiny ImageFolder of real JPEGs, and the r18...r152 configs on it."""

import json
import logging
import shutil
from pathlib import Path
from typing import cast

import lightning as L
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import Subset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from src.data.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassFolder,
    CorruptImageError,
    ImageNetDataModule,
)
from src.models.classifier import ImageClassifier, multi_crop_probs
from src.models.resnet import ResNet
from tests.conftest import run_cli
from tests.data.conftest import CLASSES, corrupt_file, write_imagefolder, write_jpeg

LOW = min(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
HIGH = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))


def dm(root: Path, **kwargs) -> ImageNetDataModule:
    """val_size 3: hold out 3 of the 12 train/ images for validation; val/ (6 images) is the test split."""
    return ImageNetDataModule(**{"data_dir": str(root), "batch_size": 4, "num_workers": 0, "val_size": 3, **kwargs})


def test_shapes_ranges_and_class_index(imagenet_dir: Path) -> None:
    data = dm(imagenet_dir)
    assert data.classes == list(CLASSES) and data.num_classes == 3 and data.in_channels == 3
    data.setup("fit")
    assert data.train_set is not None and data.val_set is not None
    assert len(data.train_set) == 9 and len(data.val_set) == 3  # 3 of train/'s 12 held out
    crops, y = next(iter(data.train_dataloader()))  # the fast pipeline ships uint8 crops ...
    assert crops.shape == (4, 3, 224, 224) and crops.dtype == torch.uint8 and y.dtype == torch.int64
    x, y2 = data.on_after_batch_transfer((crops, y), 0)  # ... finished where the batch lands
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y2 is y
    assert x.min() > LOW - 0.3 and x.max() < HIGH + 0.3  # lighting noise moves values a little
    xv, _ = next(iter(data.val_dataloader()))
    assert xv.shape == (3, 3, 224, 224) and xv.min() >= LOW - 1e-5 and xv.max() <= HIGH + 1e-5
    data.setup("test")
    _, yt = next(iter(data.test_dataloader()))
    assert yt.tolist() == [0, 0, 1, 1]  # val/ sorted by class, labelled with train's mapping
    rrc = dm(imagenet_dir, train_crop="random_resized", crop_size=64, scale_range=(72, 96), eval_resize=72)
    rrc.setup("fit")
    assert rrc.train_set is not None and rrc.train_set[0][0].shape == (3, 64, 64)
    assert data.image_size == xv.shape[-1] and rrc.image_size == 64  # the model summary's example input


def test_scale_augmentation_samples_the_short_side_in_256_480(imagenet_dir: Path) -> None:
    resize = dm(imagenet_dir).train_transform().transforms[0]
    assert isinstance(resize, v2.RandomShortestSize)
    torch.manual_seed(0)
    shorts = []
    for w, h in ((40, 30), (30, 48)):
        img = Image.new("RGB", (w, h))
        for _ in range(200):
            out = resize(img)
            short, long = min(out.size), max(out.size)
            assert abs(long / short - max(w, h) / min(w, h)) < 0.05  # aspect ratio kept
            shorts.append(short)
    values = torch.tensor(shorts, dtype=torch.float64)
    assert values.min() >= 256 and values.max() <= 480
    assert values.min() < 266 and values.max() > 470  # reaches both ends
    assert abs(values.mean() - 368) < 12 and len(set(shorts)) > 120  # uniform over the 225 lengths


def test_ten_crop_test_averages_the_crops_softmax(imagenet_dir: Path) -> None:
    data = dm(imagenet_dir, ten_crop_test=True, crop_size=48, eval_resize=56, scale_range=(56, 64))
    data.setup("test")
    x, y = next(iter(data.test_dataloader()))
    assert x.shape == (4, 10, 3, 48, 48) and y.shape == (4,)
    assert data.test_set is not None
    img = Image.open(data.test_set.samples[1][0]).convert("RGB")
    crops = TF.ten_crop(TF.resize(img, 56), 48)
    to_tensor = v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    torch.testing.assert_close(x[1], torch.stack([to_tensor(c) for c in crops]))
    net = ResNet(depth=[1, 1], block="basic", widths=[8, 16], stem="cifar", num_classes=3).eval()
    with torch.no_grad():
        probs = multi_crop_probs(net, x)
        expected = torch.stack([net(x[i]).softmax(-1).mean(0) for i in range(len(x))])
    assert probs.shape == (4, 3)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))


def test_ten_crop_test_through_the_trainer_scores_the_averaged_prediction(imagenet_dir: Path, tmp_path: Path) -> None:
    data = dm(imagenet_dir, ten_crop_test=True, crop_size=48, eval_resize=56, scale_range=(56, 64))
    model = ImageClassifier(ResNet(depth=[1, 1], block="basic", widths=[8, 16], stem="cifar", num_classes=3))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    (results,) = trainer.test(model, data, verbose=False)
    data.setup("test")
    model.eval()
    with torch.no_grad():
        batches = list(data.test_dataloader())
        preds = torch.cat([multi_crop_probs(model.net, x).argmax(-1) for x, _ in batches])
        labels = torch.cat([y for _, y in batches])
    assert results["test/acc1"] == pytest.approx(100 * (preds == labels).float().mean().item())
    predictions = trainer.predict(model, data.test_dataloader())
    # one dataloader: a flat list of per-batch logits (a list of lists only with several dataloaders)
    assert predictions is not None and all(isinstance(p, torch.Tensor) for p in predictions)
    assert torch.cat(cast(list[torch.Tensor], predictions)).shape == (len(labels), 3)


@pytest.mark.parametrize("pipeline", ["fast", "per_image"])
def test_corrupt_image_error_names_the_file(imagenet_corrupt_dir: Path, pipeline: str) -> None:
    bad = corrupt_file(imagenet_corrupt_dir)
    data = dm(imagenet_corrupt_dir, val_size=0, train_pipeline=pipeline)
    data.setup("fit")
    assert isinstance(data.train_set, ClassFolder)  # val_size=0: the whole train/ folder, no hold-out Subset
    index = [p for p, _ in data.train_set.samples].index(str(bad))
    with pytest.raises(CorruptImageError, match=str(bad)):
        data.train_set[index]
    data.num_workers = 1  # from a worker process too: the DataLoader re-raises the message
    with pytest.raises(CorruptImageError, match=bad.name):
        list(data.train_dataloader())


@pytest.mark.parametrize("pipeline", ["fast", "per_image"])
def test_skip_corrupt_skips_and_counts(
    imagenet_corrupt_dir: Path, caplog: pytest.LogCaptureFixture, pipeline: str
) -> None:
    data = dm(imagenet_corrupt_dir, skip_corrupt=True, crop_size=32, scale_range=(32, 40), eval_resize=32, val_size=0,
              train_pipeline=pipeline)  # fmt: skip
    data.setup("fit")
    assert isinstance(data.train_set, ClassFolder)  # val_size=0: the whole train/ folder, no hold-out Subset
    with caplog.at_level(logging.WARNING, logger="src.data.imagenet"):
        seen = sum(len(y) for _, y in data._loader(data.train_set, train=False))
    assert seen == 11 and data.train_set.skipped.value == 1
    assert str(corrupt_file(imagenet_corrupt_dir)) in caplog.text and "1 skipped so far" in caplog.text
    data.num_workers = 1  # the count is shared with worker processes
    seen = sum(len(y) for _, y in data._loader(data.train_set, train=False))
    assert seen == 11 and data.train_set.skipped.value == 2
    with caplog.at_level(logging.WARNING, logger="src.data.imagenet"):
        data.teardown("fit")
    assert "2 corrupt images were skipped in total" in caplog.text


def test_layout_errors_name_the_path_before_training(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"data_dir={tmp_path / 'nowhere'} is not a directory"):
        dm(tmp_path / "nowhere")
    root = write_imagefolder(tmp_path / "a")
    (root / "train" / "n09999999").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{root / 'train' / 'n09999999'} holds no image"):
        dm(root)
    root = write_imagefolder(tmp_path / "b")
    (root / "val" / "n08888888").mkdir()
    write_jpeg(root / "val" / "n08888888" / "x.JPEG", (20, 20), 0)
    with pytest.raises(ValueError, match=f"{root / 'val' / 'n08888888'}: class not in {root / 'train'}"):
        dm(root)
    root = write_imagefolder(tmp_path / "c")
    shutil.rmtree(root / "val")
    (root / "val").mkdir()
    write_jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG", (20, 20), 0)
    with pytest.raises(FileNotFoundError, match=r"val has no class folders \(1 images lie directly in it"):
        dm(root)


def test_val_missing_a_class_keeps_the_train_mapping(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "d")
    shutil.rmtree(root / "val" / CLASSES[0])
    data = dm(root)
    data.setup("test")
    assert data.test_set is not None and [y for _, y in data.test_set.samples] == [1, 1, 2, 2]


def test_class_mapping_mismatch_on_resume_is_refused(imagenet_dir: Path) -> None:
    data = dm(imagenet_dir)
    data.load_state_dict(data.state_dict())  # same tree: fine
    with pytest.raises(ValueError, match=r"the checkpoint's 3 classes differ from the 3 in .*train"):
        data.load_state_dict({"classes": [CLASSES[1], CLASSES[0], CLASSES[2]]})


# --- configs ------------------------------------------------------------------------------

SMALL = [
    # 64-pixel crops: at 32 ResNet-152's last stage is 1x1 and its batch norm, over 2 values, overflows the
    # running variance within two steps on some seeds' draws (either train pipeline)
    "--data.init_args.crop_size=64", "--data.init_args.scale_range=[72, 96]", "--data.init_args.eval_resize=72",
    "--data.init_args.global_batch_size=2", "--data.init_args.num_workers=0", "--trainer.max_steps=2",
    "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
    "--test_after_fit=false", "--data.init_args.val_size=3",
]  # fmt: skip


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_config_parses_and_composes_with_synthetic(depth: int, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    synthetic = ["-c", "configs/data/synthetic.yaml"]
    for extra, data_class in (([], "imagenet.ImageNetDataModule"), (synthetic, "synthetic.SyntheticDataModule")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli("fit", "-c", f"configs/r{depth}.yaml", *extra, "--print_config")
        assert exit_info.value.code == 0
        data = yaml.safe_load(capsys.readouterr().out)["data"]
        assert data["class_path"] == f"src.data.{data_class}"
        assert ("data_dir" in data["init_args"]) == data_class.startswith("imagenet")


@pytest.mark.parametrize("depth", [18, 34, 50, *(pytest.param(d, marks=pytest.mark.slow) for d in (101, 152))])
def test_config_runs_a_few_steps_and_saves_the_classes(depth: int, imagenet_dir: Path, in_tmp: Path) -> None:
    run_cli("fit", "-c", f"configs/r{depth}.yaml", f"--data.init_args.data_dir={imagenet_dir}", *SMALL)
    run = next(in_tmp.glob(f"runs/r{depth}/*/"))
    assert json.loads((run / "classes.json").read_text())["classes"] == list(CLASSES)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["ImageNetDataModule"]["classes"] == list(CLASSES) and ckpt["global_step"] == 2
    assert ckpt["ImageNetDataModule"]["train_loader"]["batch"] == 2  # the position a mid-epoch resume continues from
    assert ckpt["state_dict"]["net.fc.weight"].shape[0] == 3


def test_wrong_root_fails_before_training(tmp_path: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:  # the CLI reports the DataModule's error as a config error
        run_cli("fit", "-c", "configs/r18.yaml", f"--data.init_args.data_dir={tmp_path / 'missing'}", *SMALL)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"error: data_dir={tmp_path / 'missing'} is not a directory")
    assert "Union" not in err and "Namespace(" not in err  # the cause alone, not jsonargparse's report
    assert "-c configs/data/synthetic.yaml" in err
    assert not list(in_tmp.glob("runs/r18/*/checkpoints"))


def test_a_training_folder_smaller_than_one_batch_is_refused(imagenet_dir: Path) -> None:
    data = dm(imagenet_dir, batch_size=64)
    data.setup("fit")
    with pytest.raises(ValueError, match=r"train: 9 training images make no batch of data.batch_size=64"):
        data.train_dataloader()


def test_validation_is_a_seeded_hold_out_of_train_and_val_is_the_test_split(imagenet_dir: Path) -> None:
    def split(**kwargs) -> tuple[list[str], list[str], list[str]]:
        data = dm(imagenet_dir, **kwargs)
        data.setup("fit")
        data.setup("test")
        assert isinstance(data.train_set, Subset) and isinstance(data.val_set, Subset) and data.test_set is not None
        assert isinstance(data.train_set.dataset, ClassFolder)  # the hold-out splits one train/ folder by index
        files = [p for p, _ in data.train_set.dataset.samples]
        return (
            [files[i] for i in data.train_set.indices],
            [files[i] for i in data.val_set.indices],
            [p for p, _ in data.test_set.samples],
        )

    train, val, test = split()
    assert len(train) == 9 and len(val) == 3 and not set(train) & set(val)
    assert all("/train/" in p for p in train + val) and all("/val/" in p for p in test)
    assert split() == (train, val, test) and split(seed=1)[1] != val  # seeded
    assert not dm(imagenet_dir).val_is_test
    old = dm(imagenet_dir, val_size=0)  # the explicit old behaviour: validate on val/
    old.setup("fit")
    assert (
        old.val_is_test and isinstance(old.val_set, ClassFolder) and all("/val/" in p for p, _ in old.val_set.samples)
    )
    with pytest.raises(ValueError, match=r"val_size=12 must be smaller than the 12 images of .*train"):
        dm(imagenet_dir, val_size=12).setup("fit")


def test_per_pixel_mean_is_the_mean_training_crop_cached_once(imagenet_dir: Path, tmp_path: Path, monkeypatch) -> None:
    # He et al. 2015 Sec. 3.4: "a 224x224 crop ... with the per-pixel mean subtracted"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = dm(imagenet_dir, normalize="per_pixel_mean", crop_size=32, eval_resize=40, scale_range=(40, 48))
    data.prepare_data()
    (cached,) = (tmp_path / "cache" / "resnet-template").glob("imagenet-mean-*.pt")
    # Expected: the average center crop of exactly the 9 training images (the 3 held out never count).
    data.setup("fit")
    assert isinstance(data.train_set, Subset) and isinstance(data.val_set, Subset)
    assert isinstance(data.train_set.dataset, ClassFolder) and isinstance(data.val_set.dataset, ClassFolder)
    plain = v2.Compose([v2.Resize(40), v2.CenterCrop(32), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    paths = [data.train_set.dataset.samples[i][0] for i in data.train_set.indices]
    expected = torch.stack([plain(Image.open(p).convert("RGB")) for p in paths]).mean(0)
    assert torch.allclose(torch.load(cached, weights_only=True), expected, atol=1e-6)
    # The validation (and test) transform subtracts it: the crop minus the mean image, nothing else.
    val_path, _ = data.val_set.dataset.samples[data.val_set.indices[0]]
    x, _ = data.val_set[0]
    assert torch.allclose(x, plain(Image.open(val_path).convert("RGB")) - expected, atol=1e-6)
    # Cached: a second DataModule loads the file (a changed crop size gets its own file).
    mtime = cached.stat().st_mtime_ns
    dm(imagenet_dir, normalize="per_pixel_mean", crop_size=32, eval_resize=40, scale_range=(40, 48)).prepare_data()
    assert cached.stat().st_mtime_ns == mtime
    dm(imagenet_dir, normalize="per_pixel_mean", crop_size=24, eval_resize=40, scale_range=(40, 48)).prepare_data()
    assert len(list(cached.parent.glob("imagenet-mean-*.pt"))) == 2
    with pytest.raises(ValueError, match=r"mean_image .* has shape \[3, 32, 32\], expected \[3, 24, 24\]"):
        dm(imagenet_dir, normalize="per_pixel_mean", crop_size=24, mean_image=str(cached)).prepare_data()


def test_modern_train_transform_trains_small_tests_large_with_randaugment_and_erasing(imagenet_dir: Path) -> None:
    data = dm(imagenet_dir, train_crop="random_resized", train_size=48, crop_size=64, eval_resize=72,
              auto_augment="randaugment", randaugment_magnitude=6, random_erasing=1.0, lighting_std=0.0)  # fmt: skip
    names = [type(t).__name__ for t in data.train_transform().transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ToImage", "ToDtype", "Normalize",
                     "RandomErasing"]  # fmt: skip
    data.setup("fit")
    # The fast pipeline's workers send uint8 crops; the DataModule finishes the recipe once on the device.
    x, _ = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert x.shape == (4, 3, 48, 48) and x.dtype == torch.float32  # trained at train_size
    assert all((img == 0).all(dim=0).any() for img in x)  # erased (p=1) to 0, the mean once normalised
    xv, _ = next(iter(data.val_dataloader()))
    assert xv.shape == (3, 3, 64, 64)  # validated and tested at crop_size
    with pytest.raises(ValueError, match=r"normalize='per_pixel_mean' subtracts a 64x64 mean image, which a "
                                         r"train_size=48 crop cannot use"):  # fmt: skip
        dm(imagenet_dir, normalize="per_pixel_mean", train_size=48, crop_size=64, scale_range=(72, 96), eval_resize=72)
    with pytest.raises(ValueError, match=r"random_erasing=2.0 must be a probability"):
        dm(imagenet_dir, random_erasing=2.0)
    with pytest.raises(ValueError, match=r"auto_augment='augmix' is not one of none, randaugment, trivialaugment"):
        dm(imagenet_dir, auto_augment="augmix")


def test_rsb_a3_recipe_trains_on_imagefolder_files(imagenet_dir: Path, in_tmp: Path) -> None:
    """configs/recipes/rsb_a3.yaml over r50.yaml: LAMB, BCE, mixing, RandAugment, train 160 / test 224 (scaled down)."""
    from timm.optim import Lamb

    small = [a for a in SMALL if "crop_size" not in a and "scale_range" not in a and "eval_resize" not in a]
    cli = run_cli(
        "fit", "-c", "configs/r50.yaml", "-c", "configs/recipes/rsb_a3.yaml",
        f"--data.init_args.data_dir={imagenet_dir}", *small,
        "--data.init_args.train_size=32", "--data.init_args.crop_size=40", "--data.init_args.eval_resize=42",
        "--model.warmup_steps=1",
    )  # fmt: skip
    hp, data = cli.model.hparams, cli.datamodule
    assert (hp["optimizer"], hp["loss"], hp["mixup_alpha"], hp["cutmix_alpha"], hp["schedule"]) == (
        "lamb", "bce", 0.1, 1.0, "cosine"
    )  # fmt: skip
    assert (hp["lr"], hp["weight_decay"], hp["no_weight_decay_bn_bias"]) == (8e-3, 0.02, True)
    assert (data.auto_augment, data.randaugment_magnitude, data.train_crop, data.normalize) == (
        "randaugment", 6, "random_resized", "per_channel"
    )  # fmt: skip
    assert isinstance(cli.trainer.optimizers[0], Lamb) and cli.trainer.global_step == 2
    assert cli.model.net.layer1[0].bn3.weight.abs().max() < 0.05  # zero-initialised last BN, two small steps later
    ckpt = torch.load(next(in_tmp.glob("runs/r50_rsb_a3/*/checkpoints/last.ckpt")), weights_only=False)
    assert ckpt["global_step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
