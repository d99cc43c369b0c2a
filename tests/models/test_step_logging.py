"""The training loss as logged: the epoch mean summed on the device, the step value at the loggers' steps."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import TensorDataset

from src.models.classifier import ImageClassifier
from src.models.resnet import ResNet


class Losses(Callback):
    """The loss and batch size of every training step, per epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[tuple[float, int]]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append([])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, i: int) -> None:
        self.epochs[-1].append((float(outputs["loss"]), len(batch[1])))


def test_epoch_loss_is_the_batch_weighted_mean_and_step_loss_is_logged_at_logger_steps(tmp_path: Path) -> None:
    # 7 batches per epoch, the last one of 4 images: an unweighted mean of the steps would differ
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(52, 3, 8, 8, generator=g), torch.randint(0, 10, (52,), generator=g))
    data = L.LightningDataModule.from_datasets(train, train, batch_size=8)
    losses = Losses()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, log_every_n_steps=3, logger=CSVLogger(tmp_path, name="run"),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1, callbacks=[losses],
    )  # fmt: skip
    net = ResNet(depth=[1], widths=[8], stem="cifar", num_classes=10)
    trainer.fit(ImageClassifier(net, lr=0.05, schedule="constant"), data)
    assert isinstance(trainer.logger, CSVLogger)  # the one passed above
    rows = list(csv.DictReader((Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()))
    epoch_means = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    expected = [sum(loss * n for loss, n in e) / sum(n for _, n in e) for e in losses.epochs]
    assert [len(e) for e in losses.epochs] == [7, 7] and losses.epochs[0][-1][1] == 4
    torch.testing.assert_close(torch.tensor(epoch_means), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    # the step loss where the logger writes (every 3rd optimizer step), each the value of its own step
    steps = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    assert sorted(steps) == [2, 5, 8, 11]
    flat = [loss for e in losses.epochs for loss, _ in e]
    for step, value in steps.items():
        assert abs(value - flat[step]) < 1e-5


class NanAt(ImageClassifier):
    """A loss that turns NaN at one step (and stays so: the NaN gradients reach the weights)."""

    bad_step = 7

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.trainer.global_step == self.bad_step else loss


def test_deferred_finite_check_names_the_first_bad_step_not_the_step_that_noticed(tmp_path: Path) -> None:
    from src.callbacks import FiniteLoss

    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g))
    trainer = L.Trainer(
        accelerator="cpu", max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[FiniteLoss(gpu_check_every=10, defer=True)],
    )  # fmt: skip
    net = ResNet(depth=[1], widths=[8], stem="cifar", num_classes=10)
    with pytest.raises(FloatingPointError, match=r"not finite at global step 7 .*noticed at step 10"):
        trainer.fit(NanAt(net, schedule="constant"), L.LightningDataModule.from_datasets(train, batch_size=8))
