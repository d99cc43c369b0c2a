"""CIFAR-10/100 DataModules on tiny datasets in torchvision's exact pickle format, and the CIFAR configs."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from src.data.cifar import CIFAR10DataModule, CIFAR100DataModule, read_cifar_batch
from src.models import resnet as R
from tests.conftest import REPO, run_cli
from tests.data.conftest import write_cifar10

CIFAR_MODELS = [n for n, args in R.PAPER_NETS.items() if args.get("stem") == "cifar"]
WARM = {"r110", "r1202", "r110-full_preact-B", "r164-full_preact-B", "r1001-full_preact-B"}  # the papers' warm-up


def cifar_stack(name: str) -> list[str]:
    """The CIFAR net ``name`` as the README stacks it: recipe[, warm-up], its depth/block/unit/shortcut."""
    stack = ["-c", "configs/recipes/cifar.yaml"] + (["-c", "configs/recipes/warmup.yaml"] if name in WARM else [])
    return stack + [f"--model.net.init_args.{k}={v}" for k, v in R.PAPER_NETS[name].items() if k != "stem"]


DEEP = {"r1202", "r1001-full_preact-B"}


def dm10(data_dir: Path, **kwargs) -> CIFAR10DataModule:
    return CIFAR10DataModule(**{"data_dir": str(data_dir), "batch_size": 8, "val_size": 20, "num_workers": 0, **kwargs})


def test_reads_the_pickle_layout_as_chw(cifar10_dir: Path) -> None:
    folder = cifar10_dir / "cifar-10-batches-py"
    with open(folder / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    images, labels = read_cifar_batch(folder / "data_batch_2", "labels", 10)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    # A row is the R plane, then G, then B, each row-major (the format's definition).
    i, c, h, w = 7, 2, 5, 30
    assert images[i, c, h, w] == raw["data"][i, c * 1024 + h * 32 + w]
    assert labels.tolist() == raw["labels"]


def test_datamodule_shapes_ranges_and_both_roots(cifar10_dir: Path) -> None:
    for data_dir in (cifar10_dir, cifar10_dir / "cifar-10-batches-py"):  # torchvision's root, or the folder
        dm = dm10(data_dir, normalize="per_channel")
        dm.prepare_data()  # files present: no download attempted
        dm.setup("fit")
        assert dm.train_set is not None and dm.val_set is not None
        assert len(dm.train_set) == 80 and len(dm.val_set) == 20  # 5 batches of 20, 20 held out
        x, y = next(iter(dm.train_dataloader()))
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert y.min() >= 0 and y.max() < 10
        low = min(-m / s for m, s in zip(dm.mean, dm.std, strict=True))
        high = max((1 - m) / s for m, s in zip(dm.mean, dm.std, strict=True))
        assert low - 1e-5 <= x.min() and x.max() <= high + 1e-5


def test_val_split_is_disjoint_seeded_and_val_size_0_uses_the_test_split(cifar10_dir: Path) -> None:
    def split(seed: int) -> tuple[set[bytes], set[bytes]]:
        dm = dm10(cifar10_dir, seed=seed)
        dm.setup("fit")
        assert dm.train_set is not None and dm.val_set is not None
        return {im.numpy().tobytes() for im in dm.train_set.images}, {im.numpy().tobytes() for im in dm.val_set.images}

    train, val = split(0)
    assert len(train) == 80 and len(val) == 20 and not train & val  # all images distinct, none in both
    assert (train, val) == split(0)
    assert val != split(1)[1]
    dm = dm10(cifar10_dir, val_size=0)
    dm.setup("fit")
    assert dm.train_set is not None and len(dm.train_set) == 100 and dm.val_set is dm.test_set
    assert dm.test_set is not None and len(dm.test_set) == 20


def test_per_pixel_mean_is_the_mean_image_of_the_training_split(cifar10_dir: Path) -> None:
    dm = dm10(cifar10_dir, normalize="per_pixel_mean")
    dm.setup("fit")
    assert dm.train_set is not None and dm.val_set is not None and dm.norm_mean is not None
    expected = dm.train_set.images.double().mean(0) / 255  # the 80 training images, not the held-out 20
    assert dm.norm_mean.shape == (3, 32, 32)
    torch.testing.assert_close(dm.norm_mean.double(), expected)
    x, _ = dm.val_set[0]
    torch.testing.assert_close(x, dm.val_set.images[0] / 255 - dm.norm_mean)
    dm.setup("test")  # the test split is normalised with the training statistics
    assert dm.test_set is not None
    torch.testing.assert_close(dm.test_set[0][0], dm.test_set.images[0] / 255 - dm.norm_mean)


def test_cifar100_uses_fine_labels(cifar100_dir: Path) -> None:
    dm = CIFAR100DataModule(data_dir=str(cifar100_dir), val_size=0, num_workers=0, batch_size=8)
    dm.setup("fit")
    assert dm.train_set is not None and dm.test_set is not None
    assert dm.num_classes == 100 and len(dm.train_set) == 100 and len(dm.test_set) == 20
    assert dm.train_set.labels.tolist() == list(range(100))  # fine labels 0..99, not coarse 0..19


def test_missing_truncated_and_malformed_files_are_named(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "c")
    folder = root / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/data_batch_3 not found.*download"):
        dm10(root, download=False).prepare_data()
    with pytest.raises(FileNotFoundError, match="data_batch_3 not found"):
        dm10(root).setup("fit")
    write_cifar10(tmp_path / "d")
    broken = tmp_path / "d" / "cifar-10-batches-py" / "data_batch_4"
    broken.write_bytes(broken.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"data_batch_4: truncated or not a CIFAR batch pickle"):
        dm10(tmp_path / "d").setup("fit")
    with open(broken, "wb") as f:
        pickle.dump({"data": torch.zeros(2, 3072).numpy(), "labels": [0, 1]}, f)  # float data
    with pytest.raises(ValueError, match=r"data_batch_4: 'data' is float32 \(2, 3072\)"):
        dm10(tmp_path / "d").setup("fit")


# --- configs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_config_parses_with_the_paper_schedule(name: str, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *cifar_stack(name), "--print_config")
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model, net = config["model"], config["model"]["net"]["init_args"]
    assert config["trainer"]["max_steps"] == 64000 and config["data"]["init_args"]["global_batch_size"] == 128
    assert (model["lr"], model["momentum"], model["weight_decay"]) == (0.1, 0.9, 1e-4)
    assert model["milestones"] == [32000, 48000] and model["milestone_unit"] == "step"
    with torch.device("meta"):
        built = R.ResNet(**net)
    assert built.name == name and built.stem == "cifar" and net["widths"] is None  # the stem's 16/32/64
    assert (model["warmup_steps"], model["warmup_mode"], model["warmup_start_factor"]) == (
        (400, "constant", 0.1) if name in WARM else (0, "linear", 0.1)
    )
    assert config["name"] is None and config["trainer"]["default_root_dir"] == "runs/cifar"  # runs/cifar/<net name>
    assert config["data"]["init_args"]["normalize"] == "per_pixel_mean" and config["data"]["init_args"]["padding"] == 4


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n for n in CIFAR_MODELS])
def test_config_runs_a_few_steps(name: str, cifar10_dir: Path, in_tmp: Path) -> None:
    steps = 1 if name in DEEP else 2  # ResNet-1202 takes seconds per step on 2 cores
    cli = run_cli(
        *[
            "fit", *cifar_stack(name), f"--data.init_args.data_dir={cifar10_dir}",
            "--data.init_args.val_size=8", "--data.init_args.batch_size=2", f"--trainer.max_steps={steps}",
            f"--trainer.limit_train_batches={steps}", "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false", "--test_after_fit=false",
            "--checkpoint.save_top_k=0", "--checkpoint.save_last=false",  # ResNet-1202 has 19M parameters
        ]
    )  # fmt: skip
    metrics = cli.trainer.callback_metrics
    # Validation ran; its value after 1-2 steps means little (BN running statistics barely moved).
    assert cli.trainer.global_step == steps and torch.isfinite(metrics["train/loss_epoch"]) and "val/loss" in metrics


def test_cifar100_composes_over_a_cifar_config(cifar100_dir: Path, in_tmp: Path) -> None:
    run_cli(
        *[
            "fit", *cifar_stack("r20"), "-c", "configs/data/cifar100.yaml",
            f"--data.data_dir={cifar100_dir}", "--data.val_size=10", "--data.batch_size=4", "--data.on_device=true",
            "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            "--test_after_fit=false",
        ]
    )  # fmt: skip
    ckpt = torch.load(next(in_tmp.glob("runs/cifar/r20/*/checkpoints/last.ckpt")), weights_only=False)
    assert ckpt["state_dict"]["net.fc.weight"].shape[0] == 100  # num_classes linked from the DataModule


@pytest.mark.slow
def test_end_to_end_command(cifar10_dir: Path, in_tmp: Path) -> None:
    """The README's command, as a user runs it (plus what a 100-image dataset needs: a smaller split and batch)."""
    cmd = [
        sys.executable, "-m", "src.cli", "fit", *cifar_stack("r20"),
        "--data.init_args.data_dir", str(cifar10_dir), "--trainer.max_steps=5",
        "--data.init_args.val_size=20", "--data.init_args.batch_size=16", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=in_tmp, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = next(in_tmp.glob("runs/cifar/r20/*/"))
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5
    assert "Test top-1 accuracy" in done.stdout + done.stderr


def test_a_training_split_smaller_than_one_batch_is_refused(cifar10_dir: Path) -> None:
    data = dm10(cifar10_dir, batch_size=128)  # 100 training images, 20 held out
    data.setup("fit")
    with pytest.raises(ValueError, match=r"80 training images make no batch of data.batch_size=128"):
        data.train_dataloader()


def test_global_batch_size_splits_over_processes_and_accumulation(cifar10_dir: Path) -> None:
    import lightning as L

    data = dm10(cifar10_dir, batch_size=None, global_batch_size=16)
    data.trainer = L.Trainer(accelerator="cpu", devices=1, accumulate_grad_batches=4, logger=False)
    data.setup("fit")
    assert data.batch_size == 4  # 16 images per optimizer step = 1 process x 4 accumulated batches of 4
    assert next(iter(data.train_dataloader()))[0].shape[0] == 4
    explicit = dm10(cifar10_dir, batch_size=6, global_batch_size=16)  # a per-process batch_size wins
    explicit.trainer = data.trainer
    explicit.setup("fit")
    assert explicit.batch_size == 6 and next(iter(explicit.train_dataloader()))[0].shape[0] == 6
    odd = dm10(cifar10_dir, batch_size=None, global_batch_size=15)
    odd.trainer = data.trainer
    with pytest.raises(ValueError, match=r"data.global_batch_size=15 does not split evenly over 1 process"):
        odd.setup("fit")


def test_a_choice_outside_its_literal_names_the_key(cifar10_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"normalize='zca' is not one of per_channel, per_pixel_mean"):
        dm10(cifar10_dir, normalize="zca")


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_augmentation_policy_and_random_erasing_draw_per_image_in_training_only(cifar10_dir: Path, policy: str) -> None:
    dm = dm10(cifar10_dir, auto_augment=policy, random_erasing=1.0, padding=0)
    dm.setup("fit")
    plain = dm10(cifar10_dir, augment=False)
    plain.setup("fit")
    assert dm.train_set is not None and dm.val_set is not None
    assert plain.train_set is not None and plain.val_set is not None
    image, transform = dm.train_set.images[0], dm.train_set.transform
    assert transform is not None  # a training set always carries its augmentation
    draws = torch.stack([transform(image) for _ in range(16)])  # the same image, 16 draws
    assert draws.shape == (16, 3, 32, 32) and draws.dtype == torch.float32
    assert len({d.sum().item() for d in draws}) > 8  # each image (call) draws its own ops and erased box
    # Random erasing (p=1) writes 0, the mean in standardised units, into a box of every draw.
    assert all((d == 0).all(dim=0).any() for d in draws)
    # Validation images are not augmented.
    torch.testing.assert_close(dm.val_set[0][0], plain.val_set[0][0])


def test_bad_augmentation_values_are_named(cifar10_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"random_erasing=1.5 must be a probability"):
        dm10(cifar10_dir, random_erasing=1.5)
    with pytest.raises(ValueError, match="auto_augment='autoaugment' is not one of none, randaugment, trivialaugment"):
        dm10(cifar10_dir, auto_augment="autoaugment")
