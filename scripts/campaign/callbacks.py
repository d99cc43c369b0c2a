"""Callbacks the campaign adds to its CLI runs (``--trainer.callbacks+=scripts.campaign.callbacks.X``)."""

import json
import math
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch

from scripts.metrics import STEPS_PER_EPOCH


class StepsPerEpoch(L.Callback):
    """Records the run's optimizer steps per epoch as a hyperparameter, so that ``scripts.metrics`` can tell a
    complete epoch from one that ``max_time`` cut, even in a run of one epoch."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = trainer.num_training_batches
        if trainer.is_global_zero and math.isfinite(batches):
            steps = math.ceil(batches / trainer.accumulate_grad_batches)
            for logger in trainer.loggers:
                logger.log_hyperparams({STEPS_PER_EPOCH: steps})


class SyncCheck(L.Callback):
    """Arms ``torch.cuda.set_sync_debug_mode("error")`` inside training steps: any host sync of CUDA work
    (``.item()``, ``.cpu()``, a data-dependent shape, a pageable copy that waits...) then raises where it
    happens, and ``on_exception`` writes that stack to ``report``.

    Armed from step ``warmup`` for ``steps`` steps, skipping the steps where the run reads back on purpose:
    the logging steps (every ``log_every_n_steps``, on either side) and FiniteLoss's check of its device-side
    flag (every ``gpu_check_every`` steps, by default the same 50). Disarmed between steps, so validation,
    checkpointing and logging at epoch end are not checked. Without CUDA it arms nothing and says so.
    """

    def __init__(self, report: str, warmup: int = 5, steps: int = 40, avoid_every: int = 50) -> None:
        self.report, self.warmup, self.steps, self.avoid_every = Path(report), warmup, steps, avoid_every
        self.armed: list[int] = []
        self.sync: dict[str, Any] | None = None
        self.cuda = torch.cuda.is_available()

    def _checked(self, step: int, trainer: L.Trainer) -> bool:
        every = {getattr(trainer, "log_every_n_steps", 50), self.avoid_every}  # set by the Trainer, not typed
        quiet = all(step % n and (step + 1) % n for n in every)
        return self.warmup <= step < self.warmup + self.steps and quiet

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._checked(trainer.global_step, trainer):
            self.armed.append(trainer.global_step)
            if self.cuda:
                torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._disarm()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        armed = self.cuda and torch.cuda.get_sync_debug_mode() != 0
        self._disarm()
        if armed:  # raised while armed: the sync debug mode's error, with the stack that synced
            stack = traceback.format_exception(type(exception), exception, exception.__traceback__)
            self.sync = {"step": self.armed[-1], "error": str(exception), "stack": "".join(stack)}
        self._write()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write()

    def _disarm(self) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")

    def _write(self) -> None:
        self.report.parent.mkdir(parents=True, exist_ok=True)
        record = {"cuda": self.cuda, "armed_steps": self.armed, "sync": self.sync}
        self.report.write_text(json.dumps(record, indent=1))
