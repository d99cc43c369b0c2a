"""Configs compose into the networks they name: an ImageNet config is the recipe and a depth, a CIFAR
net is the CIFAR recipe and depth/unit/shortcut overrides, and both parse into ``PAPER_NETS``' nets."""

from pathlib import Path

import pytest
import torch
import yaml

from src.models import resnet as R
from tests.conftest import REPO, run_cli

CONFIGS = REPO / "configs"


def parsed_net(capsys: pytest.CaptureFixture, *args: str) -> R.ResNet:
    """The network ``python -m src.cli fit ARGS --print_config`` configures, built on the meta device."""
    return net_of(parsed(capsys, *args))


def parsed(capsys: pytest.CaptureFixture, *args: str) -> dict:
    with pytest.raises(SystemExit):
        run_cli("fit", *args, "--print_config")
    return yaml.safe_load(capsys.readouterr().out)


def net_of(config: dict) -> R.ResNet:
    net = config["model"]["net"]
    assert net["class_path"] == "src.models.resnet.ResNet"
    with torch.device("meta"):
        return R.ResNet(**net["init_args"])


@pytest.mark.parametrize("depth", sorted(R.IMAGENET_DEPTHS))
def test_imagenet_config_is_the_recipe_and_its_depth(depth: int, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = parsed(capsys, "-c", str(CONFIGS / f"r{depth}.yaml"))
    net = net_of(config)
    assert net.name == f"r{depth}" and repr(net) == repr(R.build(f"r{depth}"))
    # The dotted key adds the depth to the recipe's model group (a `model:` block there would replace it).
    assert (config["model"]["lr"], config["model"]["schedule"], config["trainer"]["max_epochs"]) == (
        0.1,
        "plateau",
        120,
    )
    assert config["data"]["init_args"]["global_batch_size"] == 256
    lines = [line for line in (CONFIGS / f"r{depth}.yaml").read_text().splitlines() if not line.startswith("#")]
    assert lines == ["config: recipes/imagenet.yaml", f"model.net.init_args.depth: {depth}"]


CIFAR_NETS = [n for n, args in R.PAPER_NETS.items() if args.get("stem") == "cifar"]


@pytest.mark.parametrize("name", CIFAR_NETS)
def test_cifar_paper_net_is_the_recipe_and_overrides(name: str, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    overrides = [f"--model.net.init_args.{k}={v}" for k, v in R.PAPER_NETS[name].items() if k != "stem"]
    net = parsed_net(capsys, "-c", str(CONFIGS / "recipes/cifar.yaml"), *overrides)
    with torch.device("meta"):  # the classes come from the DataModule (a link), not the config
        assert net.name == name and repr(net) == repr(R.build(name, num_classes=net.fc.out_features))


def test_a_recipe_alone_is_resnet20(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    for recipe in ("cifar", "fmnist"):
        assert parsed_net(capsys, "-c", str(CONFIGS / f"recipes/{recipe}.yaml")).name == "r20"


@pytest.mark.parametrize(
    "stack",
    [("recipes/cifar.yaml",), ("recipes/cifar.yaml", "data/cifar100.yaml"), ("r50.yaml",),
     ("r50.yaml", "data/synthetic.yaml"), ("recipes/fmnist.yaml",), ("quickstart.yaml",), ("data/imagenet.yaml",)],
    ids="+".join,
)  # fmt: skip
def test_shipped_configs_set_global_batch_sizes_only(stack: tuple[str, ...], in_tmp: Path, capsys) -> None:
    """Stacking trainer/ddp.yaml (more GPUs) then never changes the recipe's batch per optimizer step."""
    args = [a for f in stack for a in ("-c", str(CONFIGS / f))]
    with pytest.raises(SystemExit):
        run_cli("fit", *args, "-c", str(CONFIGS / "trainer/ddp.yaml"), "--print_config")
    data = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert data["batch_size"] is None and data["global_batch_size"] in (32, 128, 256)


def test_no_shipped_config_sets_a_per_process_batch() -> None:
    offenders = [str(p.relative_to(REPO)) for p in CONFIGS.rglob("*.yaml") if "\n    batch_size:" in p.read_text()]
    assert offenders == []


def test_modern_cifar_recipe_trains_on_cifar_files(tmp_path: Path) -> None:
    from tests.data.conftest import write_cifar10

    data_dir = write_cifar10(tmp_path / "cifar")  # torchvision's on-disk format, 100 train + 20 test images
    recipe = ("-c", str(CONFIGS / "recipes/cifar.yaml"), "-c", str(CONFIGS / "recipes/cifar_modern.yaml"))
    cli = run_cli(
        "fit", *recipe, "--model.net.init_args.drop_path_rate=0.1",
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
