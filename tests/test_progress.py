"""Plain-text progress when stdout is a file (SLURM's .out): whole lines with step, loss, lr, images/s, ETA."""

import json
import re
from pathlib import Path

import pytest

from src.progress import TextProgress
from tests.fault_injection import write_tiny_config
from tests.test_fault_tolerance import cli

TRAIN_LINE = re.compile(
    r"\[train\] epoch (\d+)/3 step (\d+)/24 \(([\d.]+)%\) loss ([\d.e+-]+) lr ([\d.e+-]+) img/s (\d+) "
    r"elapsed \d+:\d\d:\d\d eta \d+:\d\d:\d\d"
)


def test_a_log_file_gets_whole_progress_lines_with_step_loss_lr_rate_and_eta(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path / "tiny.yaml", max_epochs=3)  # 8 steps per epoch
    every_step = json.dumps({"class_path": "src.progress.TextProgress", "init_args": {"interval_s": 1e-6}})
    run = cli(tmp_path, "-c", str(config), "--trainer.enable_progress_bar=true", f"--trainer.callbacks+={every_step}")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert "[train] starting at step 0 of 24, epoch 0: 8 batches per epoch" in run.stdout, run.stdout
    train = [m for line in lines if (m := TRAIN_LINE.fullmatch(line))]
    assert [int(m[2]) for m in train] == list(range(1, 25)), run.stdout  # one line per step at this interval
    for m in train:
        epoch, step, percent = int(m[1]), int(m[2]), float(m[3])
        assert epoch == (step - 1) // 8 and percent == pytest.approx(100 * step / 24, abs=0.05)
        assert float(m[4]) > 0 and 0 <= float(m[5]) <= 0.05  # cosine schedule from lr 0.05
    vals = [line for line in lines if line.startswith("[val]")]
    assert len(vals) == 3 and all(re.search(r"val/acc1 [\d.]+ .*val/loss [\d.]+", v) for v in vals), vals
    assert "\r" not in run.stdout and "\x1b[" not in run.stdout  # no bar redraws, no terminal escapes


def test_a_log_file_gets_text_progress_by_default_and_a_bad_interval_is_named(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path / "tiny.yaml", max_steps=4)
    run = cli(tmp_path, "-c", str(config), "--trainer.enable_progress_bar=true")  # stdout is a pipe here
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[train] starting at step 0 of 4, epoch 0: 4 batches per epoch, a line every 30 s" in run.stdout
    assert "[train] epoch 0 done at step 4" in run.stdout
    assert "\x1b[" not in run.stdout
    with pytest.raises(ValueError, match="interval_s=0 must be > 0"):
        TextProgress(interval_s=0)
