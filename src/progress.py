"""Plain-text progress for logs that are files (SLURM's ``.out``, ``nohup``, CI): one line every so often.

A Rich or tqdm bar redraws one line in place; written to a file it shows nothing between the model
summary and the end of an epoch (Rich) or thousands of carriage returns (tqdm). ``TextProgress`` prints
a complete line instead, every ``interval_s`` seconds of training and at the end of each epoch:

    [train] epoch 3/90 step 1234/70380 (1.8%) loss 1.873 lr 0.1 img/s 2480 elapsed 0:08:12 eta 7:41:55
    [val]   epoch 3 step 1251 val/loss 1.655 val/acc1 42.13 val/err1 57.87

``src.cli`` picks it when stdout is not a terminal, and Rich's bar otherwise.

The first screen: ``example_input`` gives the model summary an image of the data's shape, so that its
FLOPs column is real (Lightning counts them in one forward of ``example_input_array``); ``quiet_first_screen``
drops what says nothing about the run (Lightning's advertisements, a deprecation inside Lightning).
"""

import datetime
import logging
import sys
import time
import warnings
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class TextProgress(ProgressBar):
    """A progress "bar" of whole lines: step, epoch, loss, lr, images/s and ETA every ``interval_s`` seconds."""

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        if interval_s <= 0:
            raise ValueError(f"TextProgress interval_s={interval_s} must be > 0 (seconds between lines)")
        self.interval_s = interval_s
        self._enabled = True
        self._start = self._last = 0.0
        self._start_step = 0
        self._images = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _write(self, line: str) -> None:
        if self._enabled and self.trainer.is_global_zero:
            print(line, file=sys.stdout, flush=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = self._last = time.perf_counter()
        self._start_step = trainer.global_step  # after a resume: the rate and ETA count this segment only
        self._images = 0
        total = trainer.estimated_stepping_batches
        of = f" of {int(total)}" if total != float("inf") else ""
        self._write(
            f"[train] starting at step {trainer.global_step}{of}, epoch {trainer.current_epoch}: "
            f"{self.total_train_batches} batches per epoch, a line every {self.interval_s:g} s"
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        self._images += len(x) if isinstance(x, torch.Tensor) else 0
        now = time.perf_counter()
        if now - self._last >= self.interval_s:
            self._write(self.train_line(trainer, outputs, now))
            self._last, self._images = now, 0

    def train_line(self, trainer: Trainer, outputs: Any, now: float) -> str:
        step, elapsed = trainer.global_step, now - self._start
        total = trainer.estimated_stepping_batches
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs not in (None, -1) else ""
        parts = [f"[train] epoch {trainer.current_epoch}{epochs}"]
        if total != float("inf"):
            parts.append(f"step {step}/{int(total)} ({100 * step / max(total, 1):.1f}%)")
        else:
            parts.append(f"step {step}")
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            parts.append(f"loss {loss.item():.4g}")  # one host sync per line, not per step
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.4g}")
        # Every rank sees as many images as this one.
        parts.append(f"img/s {self._images * trainer.world_size / max(now - self._last, 1e-9):.0f}")
        parts.append(f"elapsed {_clock(elapsed)}")
        done = step - self._start_step
        if total != float("inf") and done > 0:
            parts.append(f"eta {_clock(elapsed / done * (total - step))}")
        return " ".join(parts)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # The next training line's rate counts training from here, not the validation in between.
        self._last, self._images = time.perf_counter(), 0
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        values = " ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        self._write(f"[val]   epoch {trainer.current_epoch} step {trainer.global_step} {values}".rstrip())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        elapsed = _clock(time.perf_counter() - self._start)
        self._write(f"[train] epoch {trainer.current_epoch} done at step {trainer.global_step}, elapsed {elapsed}")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/") and v.numel() == 1}
        self._write("[test]  " + " ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))


def example_input(data: Any, model: LightningModule) -> torch.Tensor | None:
    """One image of the DataModule's ``in_channels`` x ``image_size`` (None when it does not say). The
    summary runs it in eval mode without gradients: no BN statistics or RNG draws change. Not for a
    compiled model: the forward would compile it for a batch of one before training."""
    size, channels = getattr(data, "image_size", None), getattr(data, "in_channels", None)
    if not isinstance(size, int) or not isinstance(channels, int) or model.hparams.get("compile"):
        return None
    return torch.zeros(1, channels, size, size)


class _NoAdvertisement(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_first_screen() -> None:
    """Lightning 2.6 advertises its cloud loggers and model registry (``💡 Tip: ...``, one info line each,
    logger_connector.py and callback_connector.py), and its own ``_pytree.py`` builds torch's deprecated
    ``LeafSpec`` (a FutureWarning at every fit and test). Neither says anything about the run: both dropped,
    matched by their text and origin, so that every other line Lightning prints still shows."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertisement) for f in logger.filters):
            logger.addFilter(_NoAdvertisement())
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
