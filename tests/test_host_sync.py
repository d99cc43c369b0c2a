"""No host sync per training step: the ops that make a GPU's host wait, recorded on CPU.

On a GPU the host runs ahead of the device, queueing kernels; anything that needs a value or a
size computed on the device (``.item()``, ``bool(t)``, ``torch.unique``, ``nonzero``) or that copies
from pageable host memory makes the host wait for the queue to drain. A small net then runs at the
host's speed plus the device's instead of the larger of the two (the GPU campaign measured 22 ms per
ResNet-20 step on an H100). Those ops are dispatched on CPU too, so a TorchDispatchMode sees them here.
"""

from typing import Any

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchmetrics.classification import MulticlassAccuracy

from src.callbacks import FiniteLoss
from src.data.on_device import PadCropFlipNormalize
from src.data.synthetic import SyntheticDataModule
from src.loggers import RunFacts
from src.models.classifier import ImageClassifier
from src.models.resnet import ResNet

# Ops whose result size or value the host must read back from the device.
SYNC_OPS = {
    "_local_scalar_dense",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "nonzero",
    "masked_select",
    "bincount",  # reads the input's maximum back to size its output (ATen's CUDA kernel)
}


class HostSyncs(TorchDispatchMode):
    """Records the ops that would stall a GPU's host: read-backs, and ops that mix host and device tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = func.overloadpacket.__name__
        self.ops.add(name)
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, tuple | list) else (out,)
        tensors = [a for a in (*args, *(kwargs or {}).values(), *results) if isinstance(a, torch.Tensor)]
        devices = {t.device.type for t in tensors if t.dim() > 0}  # 0-dim CPU tensors are scalars, no copy
        if name in SYNC_OPS or ("cpu" in devices and len(devices) > 1):
            self.seen.append(f"{name}{sorted(devices)}")
        return out


def test_on_device_augmentation_copies_nothing_from_the_host_per_batch() -> None:
    # The meta device stands in for a GPU: a host tensor meeting a meta tensor is a host-to-device copy.
    recipe = PadCropFlipNormalize(8, torch.full((1, 8, 8), 0.3), torch.tensor([0.35]).view(1, 1, 1), (0.0,), 2, True)
    batch = torch.zeros(16, 1, 8, 8, dtype=torch.uint8, device="meta")
    with HostSyncs() as before:
        recipe(batch)
    assert before.seen, "the detector must see the per-batch copies of statistics kept on the host"
    on_device = recipe.to("meta")
    with HostSyncs() as after:
        for _ in range(3):
            out = on_device(batch)
    assert after.seen == [] and out.shape == (16, 1, 8, 8) and out.device.type == "meta"


def test_metrics_update_without_a_read_back() -> None:
    preds, target = torch.randn(32, 10), torch.randint(0, 10, (32,))
    with HostSyncs() as library:  # torchmetrics' top-k path checks its one-hot input with .item()
        MulticlassAccuracy(10, top_k=5, average="micro").update(preds, target)
    assert "_local_scalar_dense[]" in library.seen
    model = ImageClassifier(ResNet(block="basic", depths=[1, 1, 1], widths=[4, 8, 8], stem="cifar", num_classes=10))
    with HostSyncs() as ours:
        model.train_metrics.update(preds, target)
    assert ours.seen == [] and "topk" in ours.ops


class RecordSteps(L.Callback):
    """Records host syncs inside the steps that neither log (every log_every_n_steps) nor check for NaN
    (FiniteLoss reads its device-side flag every gpu_check_every steps, here the same n)."""

    def __init__(self) -> None:
        self.mode: HostSyncs | None = None
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        step, n = trainer.global_step, trainer.log_every_n_steps
        if step % n and (step + 1) % n:
            self.mode = HostSyncs()
            self.mode.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.seen[trainer.global_step] = self.mode.seen
            self.mode = None


def test_a_training_step_reads_nothing_back() -> None:
    data = SyntheticDataModule(num_classes=10, in_channels=1, image_size=8, train_size=96, val_size=16, batch_size=8)
    net = ResNet(block="basic", depths=[1, 1, 1], widths=[4, 8, 8], stem="cifar", num_classes=10, in_channels=1)
    record = RecordSteps()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=12,
        log_every_n_steps=5,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,  # a bar shows the loss: it reads it back at every refresh
        enable_model_summary=False,
        callbacks=[FiniteLoss(gpu_check_every=5, defer=True), RunFacts("sync-test"), record],  # as on a GPU
    )
    trainer.fit(ImageClassifier(net, schedule="cosine"), data)
    assert len(record.seen) >= 6
    assert {step: ops for step, ops in record.seen.items() if ops} == {}
