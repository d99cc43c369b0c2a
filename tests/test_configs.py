"""Configs and Python presets describe the same networks: every model fragment and ImageNet config
builds exactly the network of its preset in src/models/resnet.py (module tree, unit, shortcut)."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from src.models import resnet as R
from tests.conftest import REPO, run_cli

CONFIGS = REPO / "configs"

CIFAR_PRESETS: dict[str, Callable[[], R.ResNet]] = {
    **{f"resnet{d}": (lambda d=d: R.cifar_resnet(d)) for d in (20, 32, 44, 56, 110, 1202)},
    **{f"plain{d}": (lambda d=d: R.cifar_plain(d)) for d in (20, 32, 44, 56)},
    **{f"preact_resnet{d}": (lambda d=d: R.preact_resnet(d, "basic")) for d in (20, 110)},
    **{f"preact_resnet{d}": (lambda d=d: R.preact_resnet(d)) for d in (164, 1001)},
}
IMAGENET_PRESETS = {"r18": R.resnet18, "r34": R.resnet34, "r50": R.resnet50, "r101": R.resnet101, "r152": R.resnet152}


def net_of(config: Path, **extra: object) -> R.ResNet:
    net = yaml.safe_load(config.read_text())["model"]["net"]
    assert net["class_path"] == "src.models.resnet.ResNet"
    return R.ResNet(**{**net["init_args"], **extra})


def same_network(a: R.ResNet, b: R.ResNet) -> bool:
    return repr(a) == repr(b) and (a.block, a.unit, a.shortcut) == (b.block, b.unit, b.shortcut)


def test_every_model_fragment_has_a_preset() -> None:
    assert {p.stem for p in (REPO / "configs" / "models").glob("*.yaml")} == set(CIFAR_PRESETS)


@pytest.mark.parametrize("name", sorted(CIFAR_PRESETS))
def test_model_fragment_builds_its_preset(name: str) -> None:
    assert same_network(net_of(REPO / "configs" / "models" / f"{name}.yaml", num_classes=10), CIFAR_PRESETS[name]())


@pytest.mark.parametrize("name", sorted(IMAGENET_PRESETS))
def test_imagenet_config_builds_its_preset(name: str) -> None:
    assert same_network(net_of(REPO / "configs" / f"{name}.yaml"), IMAGENET_PRESETS[name]())


def test_a_changed_fragment_is_caught(tmp_path: Path) -> None:
    changed = tmp_path / "resnet56.yaml"
    changed.write_text((REPO / "configs/models/resnet56.yaml").read_text().replace("shortcut: A", "shortcut: B"))
    assert not same_network(net_of(changed, num_classes=10), CIFAR_PRESETS["resnet56"]())


def test_modern_cifar_recipe_trains_on_cifar_files(tmp_path: Path) -> None:
    from tests.data.conftest import write_cifar10

    data_dir = write_cifar10(tmp_path / "cifar")  # torchvision's on-disk format, 100 train + 20 test images
    recipe = ("-c", str(CONFIGS / "recipes/cifar.yaml"), "-c", str(CONFIGS / "recipes/cifar_modern.yaml"))
    cli = run_cli(
        "fit", *recipe, "-c", str(CONFIGS / "models/resnet20.yaml"), "--model.net.init_args.drop_path_rate=0.1",
        f"--data.init_args.data_dir={data_dir}", "--data.init_args.val_size=20", "--data.init_args.batch_size=16",
        "--trainer.max_steps=6", "--model.warmup_steps=2", f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--trainer.enable_progress_bar=false",
    )  # fmt: skip
    model = cli.model
    assert (model.hparams["mixup_alpha"], model.hparams["cutmix_alpha"], model.hparams["nesterov"]) == (0.2, 1.0, True)
    assert model.net.drop_path_rate == 0.1 and cli.trainer.global_step == 6
    assert (cli.datamodule.auto_augment, cli.datamodule.random_erasing, cli.datamodule.padding) == (
        "trivialaugment",
        0.25,
        4,
    )
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    last = torch.load(ckpt, weights_only=False)
    assert "current_model_state" in last  # the EMA callback ran: the checkpoint holds EMA and raw weights
    assert torch.isfinite(cli.trainer.callback_metrics["test/err1"])
