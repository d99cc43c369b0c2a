"""Real faults for the fault-tolerance and Slurm tests: a process that signals (SIGKILL, SIGTERM) itself at a
known step, one that saves checkpoints in a loop so a test can SIGKILL it mid-write, and the tiny config they train.

    python -m tests.fault_injection save-loop <path> <megabytes>
"""

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class SignalAtStep(Callback):
    """A real signal (default ``kill -9``) to this very process right after optimizer step ``step``.

    Fires once per ``marker`` file, so the identical command run again resumes and runs through.
    """

    def __init__(self, step: int, marker: str, signum: int = 9) -> None:  # 9: SIGKILL, 15: SIGTERM
        self.step, self.marker, self.signum = step, Path(marker), signal.Signals(signum)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(
                f"{self.signum.name} at global step {trainer.global_step}, epoch {trainer.current_epoch}\n"
            )
            os.kill(os.getpid(), self.signum)


class SignalAtSanityCheck(Callback):
    """A real SIGTERM to this process as the sanity check starts: before Preemption's handlers exist."""

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


class SlowSteps(Callback):
    """Every training step takes at least ``seconds``: training whose length in wall time a test can plan."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        time.sleep(self.seconds)


TINY_CONFIG = """\
seed_everything: 0
name: tiny
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: {max_epochs}
  max_steps: {max_steps}
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
model:
  net:
    class_path: src.models.resnet.ResNet
    init_args: {{depth: [1, 1], widths: {widths}, stem: cifar}}
  lr: 0.05
  schedule: cosine
data:
  class_path: src.data.synthetic.SyntheticDataModule
  init_args: {{num_classes: 4, in_channels: 1, image_size: {image_size}, train_size: 64, val_size: 16, batch_size: 8}}
test_after_fit: false
"""


def write_tiny_config(
    path: Path, max_epochs: int = -1, max_steps: int = -1, widths: str = "[4, 8]", image_size: int = 8
) -> Path:
    """A 2-stage ResNet on 64 random 1x8x8 images in 4 classes: 8 steps per epoch on one process."""
    path.write_text(
        TINY_CONFIG.format(max_epochs=max_epochs, max_steps=max_steps, widths=widths, image_size=image_size)
    )
    return path


def save_loop(path: str, megabytes: int) -> None:
    """Save checkpoints of ``megabytes`` through AtomicCheckpointIO forever, printing each finished step."""
    from src.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    payload = torch.arange(megabytes * 2**18, dtype=torch.float32)  # 4 bytes each
    step = 0
    while True:
        io.save_checkpoint({"step": step, "payload": payload + step}, path)
        print(step, flush=True)
        step += 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["save-loop"]:
        save_loop(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
