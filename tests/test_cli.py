"""The entry point as a user drives it: configs compose, bad input fails early, runs reproduce."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, run_cli

# Pieces of a stack, not runnable alone; and W&B sweep definitions (tests/test_sweeps.py).
FRAGMENT_DIRS = {"data", "trainer", "recipes", "sweeps"}
EXPERIMENTS = sorted(
    p.relative_to(REPO) for p in (REPO / "configs").rglob("*.yaml") if p.parent.name not in FRAGMENT_DIRS
)


# An ImageNet recipe on random data: the CLI's whole path without files.
R18_SYNTHETIC = ("fit", "-c", "configs/r18.yaml", "-c", "configs/data/synthetic.yaml")


@pytest.mark.parametrize("config", EXPERIMENTS, ids=str)
def test_every_experiment_config_parses(config: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    extra = [] if "data" in yaml.safe_load((REPO / config).read_text()) else ["-c", "configs/data/synthetic.yaml"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "-c", str(config), *extra, "--print_config")
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["net"]["class_path"] == "src.models.resnet.ResNet"
    assert printed["checkpoint"]["monitor"] == "val/err1"


def test_later_configs_and_flags_override_earlier_ones(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_cli(
            "fit",
            "-c",
            "configs/r50.yaml",
            "-c",
            "configs/data/synthetic.yaml",
            "--model.lr=0.05",
            "--model.net.init_args.unit=full_preact",
            "--print_config",
        )
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["lr"] == 0.05
    assert cfg["model"]["net"]["init_args"]["unit"] == "full_preact"
    assert cfg["model"]["net"]["init_args"]["depth"] == 50  # from r50.yaml, over its recipe's 18
    assert cfg["data"]["class_path"] == "src.data.synthetic.SyntheticDataModule"


def test_imagenet_config_fast_dev_run_on_synthetic_data(in_tmp: Path) -> None:
    cli = run_cli(
        *R18_SYNTHETIC,
        "--data.init_args.image_size=64",
        "--data.init_args.batch_size=4",
        "--trainer.fast_dev_run=true",
        "--trainer.enable_progress_bar=false",
    )
    trainer = cli.trainer
    assert trainer.global_step == 1
    assert trainer.lightning_module.net.fc.out_features == 1000  # linked from the DataModule
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--model.net.init_args.unit=foo"], ["unit", "foo", "full_preact"]),
        (["--model.lrr=0.1"], ["lrr"]),
        (["--model.net.init_args.depth=[1, 1]"], ["depth=[1, 1]", "widths=[16, 32, 64]"]),
        (["--model.net.init_args.depth=21"], ["depth=21", "6n+2"]),
        (["--model.net.init_args.shortcut=D"], ["shortcut", "D"]),
        (["--data.init_args.batch_size=0"], ["batch_size=0"]),
    ],
)
def test_bad_value_on_command_line_exits_before_training_naming_it(args: list[str], names: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "src.cli", "fit", "-c", "configs/quickstart.yaml", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]  # one line, the last one, naming the key and value
    assert last.startswith("error: ") and proc.stderr.count("error") == 1, proc.stderr[-2000:]
    for name in names:
        assert name in last
    assert "Epoch" not in proc.stdout + proc.stderr  # nothing trained


def test_bad_key_in_yaml_is_named(in_tmp: Path) -> None:
    bad = in_tmp / "bad.yaml"
    bad.write_text("model:\n  net:\n    class_path: src.models.resnet.ResNet\n    init_args:\n      blok: basic\n")
    proc = subprocess.run(
        [sys.executable, "-m", "src.cli", "fit", "-c", str(REPO / "configs/quickstart.yaml"), "-c", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "blok" in last, proc.stderr[-2000:]


@pytest.mark.slow
def test_quickstart_trains_on_fashion_mnist_and_saved_config_reproduces_test(in_tmp: Path, fmnist_dir: Path) -> None:
    """The README's main command, shortened to 2 epochs (the full 8 epochs reach >= 90%)."""
    cmd = [sys.executable, "-m", "src.cli", "fit", "-c", "configs/quickstart.yaml", "--trainer.max_epochs=2"]
    proc = subprocess.run(
        [*cmd, "--trainer.enable_progress_bar=false"],
        cwd=in_tmp,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr  # the summary goes through Lightning's logger (stderr)
    match = re.search(r"Test top-1 accuracy ([\d.]+)% \(error ([\d.]+)%\) of the best checkpoint (\S+)", output)
    assert match, output[-3000:]
    acc, best = float(match.group(1)), Path(match.group(3))
    assert acc >= 85.0  # 2 epochs; the 8 of README give 91.09%
    run_dir = in_tmp / "runs" / "quickstart" / "version_0"
    assert best.parent == Path("runs/quickstart/version_0/checkpoints")
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    metrics = (run_dir / "metrics.csv").read_text().splitlines()
    assert "val/err1" in metrics[0] and "test/acc1" in metrics[0]

    # `test -c <saved config> --ckpt_path <best>` gives the same number
    cli = run_cli("test", "-c", str(run_dir / "config.yaml"), "--ckpt_path", str(best))
    reproduced = cli.trainer.callback_metrics["test/acc1"].item()
    assert reproduced == pytest.approx(acc, abs=0.005)


def test_checkpointing_can_be_switched_off(in_tmp: Path) -> None:
    cli = run_cli(
        *R18_SYNTHETIC,
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=2",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
    )
    assert cli.trainer.global_step == 2
    assert not list(in_tmp.rglob("*.ckpt"))


def test_validating_on_the_test_split_reports_the_last_checkpoint(
    in_tmp: Path, fmnist_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # val_size 0 = validate on the official test split: a "best" chosen there would leak, so the
    # printed test number is the last checkpoint's
    with caplog.at_level("INFO"):
        run_cli(
            "fit",
            "-c",
            "configs/quickstart.yaml",
            "--data.init_args.val_size=0",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=2",
            "--trainer.limit_test_batches=2",
            "--trainer.enable_progress_bar=false",
        )
    assert "of the last checkpoint" in caplog.text
    assert "of the best checkpoint" not in caplog.text


# quickstart's network on a few 16x16 random images: each run is a couple of seconds.
TINY = (
    "fit",
    "-c",
    "configs/quickstart.yaml",
    "--data=src.data.synthetic.SyntheticDataModule",
    "--data.num_classes=10",
    "--data.in_channels=1",
    "--data.image_size=16",
    "--data.train_size=32",
    "--data.val_size=16",
    "--data.batch_size=16",
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
)


def run_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_one_off_run_lands_in_its_version_directory(in_tmp: Path) -> None:
    run_cli(*TINY)
    run_cli(*TINY)  # a second call: a new version, nothing resumed
    files = run_files(in_tmp / "runs")
    for version in ("quickstart/version_0", "quickstart/version_1"):
        assert {f"{version}/{f}" for f in ("config.yaml", "metrics.csv", "hparams.yaml")} <= files
        assert f"{version}/checkpoints/last.ckpt" in files
        assert any(f.startswith(f"{version}/checkpoints/best-") for f in files)
    assert {f.split("/")[0] for f in files} == {"quickstart"}


def test_default_root_dir_moves_every_file_of_the_run(in_tmp: Path) -> None:
    # Every writer (CSV, config.yaml, both checkpoints) asks the one run layout: nothing stays in ./runs.
    run_cli(*TINY, f"--trainer.default_root_dir={in_tmp / 'elsewhere'}", "--name=mine")
    assert not (in_tmp / "runs").exists()
    files = run_files(in_tmp / "elsewhere")
    assert {"mine/version_0/config.yaml", "mine/version_0/metrics.csv", "mine/version_0/checkpoints/last.ckpt"} <= files


def test_run_dir_keeps_checkpoints_and_one_log_directory_per_restart(in_tmp: Path, caplog) -> None:
    run_cli(*TINY, "--run_dir=stable")
    with caplog.at_level("INFO"):
        cli = run_cli(*TINY, "--run_dir=stable", "--trainer.max_epochs=2")
    assert "Resuming from" in caplog.text and cli.trainer.current_epoch == 2
    files = run_files(in_tmp / "stable")
    assert {"version_0/config.yaml", "version_1/config.yaml", "version_1/metrics.csv", "checkpoints/last.ckpt"} <= files
    assert not [f for f in files if f.startswith("version_") and f.endswith(".ckpt")]
    assert not (in_tmp / "runs").exists()


def test_the_first_screen_shows_real_flops_and_nothing_irrelevant(in_tmp: Path) -> None:
    # The summary's FLOPs column was all zeros (no example input), and Lightning advertised its cloud
    # logger and warned about torch's LeafSpec from inside itself.
    args = [a for a in TINY if a != "--trainer.enable_progress_bar=false"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.cli",
            *args,
            "--trainer.max_steps=1",
            "--trainer.enable_model_summary=true",
            "--name=first",
        ],
        cwd=in_tmp,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    match = re.search(r"Total FLOPs: ([\d.]+) ([KMB]?)", out)
    assert match, out[-3000:]
    flops = float(match.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[match.group(2)]
    macs = yaml.safe_load((in_tmp / "runs/first/version_0/hparams.yaml").read_text())["model/GMACs"] * 1e9
    assert flops == pytest.approx(2 * macs, rel=0.05)  # RunFacts' count of the same net; a multiply-add is 2 FLOPs
    assert "Tip:" not in out and "LeafSpec" not in out, out[-3000:]
