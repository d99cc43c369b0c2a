"""Bad input and damaged run directories (src/bad_input.py): one line naming the cause, exit code 2, before
any training, and the last line a user sees; damaged checkpoints are named and moved aside, never silently
trained over."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from src.checkpoint_io import AtomicCheckpointIO, checkpoint_problem
from tests.conftest import REPO, require, run_cli
from tests.fault_injection import write_tiny_config


def fails(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Runs the CLI, expects exit code 2 and returns the error: one line, the last of stderr, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    return one_error_line(err)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    assert [line for line in lines if line.startswith(("error", "usage"))] == lines[-1:], err
    return lines[-1]


@pytest.fixture
def tiny(in_tmp: Path) -> str:
    return str(write_tiny_config(in_tmp / "tiny.yaml", max_steps=4))


def test_an_empty_config_file_is_named(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "empty.yaml").write_text("# nothing yet\n\n")
    assert "config file empty.yaml is empty" in fails(capsys, "fit", "-c", "empty.yaml")


def test_a_config_file_that_is_missing_or_not_yaml_is_named(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "broken.yaml").write_text("trainer: [max_steps: 4\n")
    assert "config file broken.yaml is not valid YAML: " in fails(capsys, "fit", "-c", "broken.yaml")
    assert fails(capsys, "fit", "-c", "nowhere.yaml") == "error: config file nowhere.yaml does not exist"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--model.lr=abc"], "error: model.lr: Expected a <class 'float'>. Got value: abc"),
        (["--model.net.init_args.unit=foo"], "error: model.net.unit: Expected a typing.Literal["),
        (["--model.lrr=0.1"], "error: unrecognized arguments: --model.lrr=0.1"),
        (["--data.init_args.batch_size=x"], "error: data.batch_size: Expected a <class 'int'>. Got value: x"),
        (["--trainer.max_steps=0"], "error: trainer.max_steps: 0 trains no step"),
        (["--trainer.max_epochs=0"], "error: trainer.max_epochs: 0 trains no step"),
        (["--trainer.limit_train_batches=0"], "error: trainer.limit_train_batches: 0 trains no step"),
        (["--trainer.limit_train_batches=0.0"], "error: trainer.limit_train_batches: 0.0 trains no step"),
    ],
    ids=["type", "literal", "unknown-key", "union", "max_steps", "max_epochs", "limit_train_batches", "limit-float"],
)
def test_a_refused_config_is_one_line_naming_the_key_and_trains_nothing(
    tiny: str, in_tmp: Path, capsys: pytest.CaptureFixture, args: list[str], error: str
) -> None:
    assert fails(capsys, "fit", "-c", tiny, *args).startswith(error)
    assert not (in_tmp / "runs").exists()


def test_zero_steps_in_a_config_file_are_refused_naming_the_key(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_tiny_config(in_tmp / "zero.yaml", max_epochs=0)
    assert fails(capsys, "fit", "-c", str(config)).startswith("error: trainer.max_epochs: 0 trains no step")
    # fast_dev_run overrides the three: one step, so it trains
    assert run_cli("fit", "-c", str(config), "--trainer.fast_dev_run=true").trainer.global_step == 1


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"hello", "not a torch.save archive"), (b"", "an empty file"), (None, "no such file")],
    ids=["text", "empty", "missing"],
)
def test_ckpt_path_that_is_no_checkpoint_is_named(
    tiny: str, in_tmp: Path, capsys: pytest.CaptureFixture, content: bytes | None, why: str
) -> None:
    path = in_tmp / "x.ckpt"
    if content is not None:
        path.write_bytes(content)
    for subcommand in ("fit", "test"):
        assert f"--ckpt_path {path}: {why}" in fails(capsys, subcommand, "-c", tiny, "--ckpt_path", str(path))


def test_lightning_s_own_checks_are_one_line(tiny: str, capsys: pytest.CaptureFixture) -> None:
    assert "`max_epochs` must be a non-negative integer or -1. You passed in -5" in fails(
        capsys, "fit", "-c", tiny, "--trainer.max_epochs=-5"
    )


def test_a_dataset_error_in_setup_is_one_line_and_leaves_no_run(
    in_tmp: Path, fmnist_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    err = fails(capsys, "fit", "-c", "configs/quickstart.yaml", "--data.init_args.val_size=70000", "--run_dir=r")
    assert "val_size=70000 must be in [0, 60000)" in err
    assert not (in_tmp / "r").exists()  # no config.yaml of the rejected run, no empty directories


def test_the_error_comes_after_wandb_s_closing_lines_and_its_offline_run_is_removed(
    tmp_path: Path, fmnist_dir: Path
) -> None:
    # A failed start had started an offline W&B run: its closing lines came after the error, and the run's
    # directory stayed behind among real runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="offline", NETRC=str(tmp_path / "no-netrc"))
    env.update({k: str(tmp_path / k.lower()) for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")})
    (tmp_path / "runs" / "quickstart").mkdir(parents=True)  # an earlier run's folder: kept
    cmd = [sys.executable, "-m", "src.cli", "fit", "-c", str(REPO / "configs/quickstart.yaml")]
    proc = subprocess.run(
        [*cmd, "--data.init_args.val_size=70000"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "wandb: " in proc.stderr  # W&B ran, and closed before the error
    assert one_error_line(proc.stderr).startswith("error: val_size=70000 must be in [0, 60000)")
    assert [p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*")] == [Path("runs/quickstart")]


def damaged_run(in_tmp: Path, tiny: str, best: bool) -> Path:
    """A stable run of 4 steps (last.ckpt at step 4, best-*.ckpt by validation), last.ckpt truncated."""
    run_cli("fit", "-c", tiny, "--run_dir=run", "--trainer.max_epochs=1", "--trainer.max_steps=-1")
    ckpts = in_tmp / "run" / "checkpoints"
    if not best:
        for p in ckpts.glob("best-*.ckpt"):
            p.unlink()
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return ckpts


def test_a_truncated_last_ckpt_is_moved_aside_and_the_best_one_resumes(
    tiny: str, in_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpts = damaged_run(in_tmp, tiny, best=True)
    (best,) = ckpts.glob("best-*.ckpt")
    with pytest.warns(UserWarning, match=r"cannot resume from .*last\.ckpt: not a torch\.save archive"):
        cli = run_cli("fit", "-c", tiny, "--run_dir=run", "--trainer.max_epochs=2", "--trainer.max_steps=-1")
    assert (ckpts / "last.ckpt.corrupt").exists()
    assert Path(cli.trainer.ckpt_path).resolve() == best.resolve()
    assert cli.trainer.global_step == 16
    assert checkpoint_problem(ckpts / "last.ckpt") is None  # rewritten by the resumed run


def test_no_readable_checkpoint_stops_instead_of_restarting_at_step_0(
    tiny: str, in_tmp: Path, capsys: pytest.CaptureFixture
) -> None:
    damaged_run(in_tmp, tiny, best=False)
    args = ("fit", "-c", tiny, "--run_dir=run", "--trainer.max_epochs=2", "--trainer.max_steps=-1")
    with pytest.warns(UserWarning, match="cannot resume"):
        assert "holds no readable checkpoint (last.ckpt (not a torch.save archive" in fails(capsys, *args)
    # Again: the moved-aside file still says there was a run here; it does not start over.
    assert "holds no readable checkpoint (last.ckpt.corrupt)" in fails(capsys, *args)


def test_a_stale_tmp_is_removed_on_the_next_start(tiny: str, in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_cli("fit", "-c", tiny, "--run_dir=run")
    stale = in_tmp / "run" / "checkpoints" / "last.ckpt.tmp"
    stale.write_bytes(b"partial")
    with caplog.at_level("INFO"):
        run_cli("fit", "-c", tiny, "--run_dir=run", "--trainer.max_steps=6")
    assert not stale.exists() and "Removed run/checkpoints/last.ckpt.tmp" in caplog.text


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """A 512 KiB tmpfs: a real disk that fills up (torch then reports "unexpected pos" with ENOSPC as context)."""
    target = tmp_path / "small"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(target)], capture_output=True)
    yield target, mounted.returncode == 0
    if mounted.returncode == 0:
        subprocess.run(["umount", str(target)], check=True)


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(small_disk: tuple[Path, bool]) -> None:
    full_dir, mounted = small_disk
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, full_dir / "last.ckpt")  # small: fits
    if not mounted:  # no permission to mount: the next temp file is /dev/full, where every write fails ENOSPC
        (full_dir / "last.ckpt.tmp").symlink_to("/dev/full")
    with pytest.raises(OSError, match=rf"no space left on {full_dir} .* while saving last\.ckpt; the previous"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(2**20)}, full_dir / "last.ckpt")  # 4 MiB: does not
    assert torch.load(full_dir / "last.ckpt", weights_only=True)["step"] == 1
    assert not os.path.lexists(full_dir / "last.ckpt.tmp")


def test_a_disk_filling_up_during_training_is_one_line(
    tiny: str, in_tmp: Path, small_disk: tuple[Path, bool], capsys: pytest.CaptureFixture
) -> None:
    run_dir, mounted = small_disk
    require(None if mounted else "needs a 512 KiB tmpfs: mount -t tmpfs failed (run as root, as .ci/run does)")
    args = (
        "fit",
        "-c",
        tiny,
        f"--run_dir={run_dir}",
        "--model.net.init_args.widths=[32, 64]",
        "--trainer.max_steps=40",
    )
    err = fails(capsys, *args, "--last_checkpoint.every_n_train_steps=1", "--checkpoint.save_top_k=-1")
    assert f"no space left on {run_dir}" in err or f"no space left on the disk of {run_dir}" in err
    assert not list(run_dir.rglob("*.tmp"))
