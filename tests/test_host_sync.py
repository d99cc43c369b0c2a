"""No host sync per training step: the ops that make a GPU's host wait, recorded on CPU.

On a GPU the host runs ahead of the device, queueing kernels; anything that needs a value or a
size computed on the device (``.item()``, ``bool(t)``, ``torch.unique``, ``nonzero``) or that copies
from pageable host memory makes the host wait for the queue to drain. A small net then runs at the
host's speed plus the device's instead of the larger of the two (the GPU campaign measured 22 ms per
ResNet-20 step on an H100). Two recorders, because on CPU a read-back may never reach the dispatcher:
- a TorchDispatchMode sees the ATen ops that read a value or a size back (``_local_scalar_dense``,
  ``nonzero``, ...) and ops that mix host and device tensors;
- a TorchFunctionMode sees the Tensor methods that copy values to the host (``.cpu()``, ``.to("cpu")``,
  ``.tolist()``, ``.numpy()``, ``bool``/``float``/``int``/``format``): on a CPU tensor most of them
  return at once without dispatching anything, on a CUDA tensor each one waits for the device.
What neither sees on CPU: ``.to(device)`` with a device object that is the host (here also the training
device), a copy into a host tensor that is not a method of the device tensor (``host.copy_(t)``,
``torch.save``), and anything inside a custom C++/CUDA kernel. The GPU check of the campaign
(``torch.cuda.set_sync_debug_mode``) sees every sync; this test keeps the CPU-visible ones out.
"""

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.overrides import TorchFunctionMode
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


# Tensor methods that copy values to the host: on CUDA data each one waits for the device.
READ_BACKS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__, torch.Tensor.cpu,
    torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__,
    torch.Tensor.__format__, torch.Tensor.__repr__, torch.Tensor.__str__,
}  # fmt: skip


def to_host(args: tuple, kwargs: dict) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` names the host as a string (``.to("cpu")``). Not a device object:
    on CPU ``.to(torch.device("cpu"))`` is what ``.to(self.device)`` is (Lightning moves its logged values to
    the module's device every step), so there is no telling a read-back from staying on the device."""
    return any(isinstance(a, str) and torch.device(a).type == "cpu" for a in [*args, kwargs.get("device")])


class ReadBacks(TorchFunctionMode):
    """Records the Tensor methods that would copy device data to the host, whatever the device here."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in READ_BACKS or (func is torch.Tensor.to and to_host(args[1:], kwargs)):
            self.seen.append(func.__name__)
        return func(*args, **kwargs)


def test_read_backs_of_a_tensor_are_seen_on_cpu_where_the_dispatcher_sees_none() -> None:
    t = torch.arange(4.0)
    with HostSyncs() as dispatched, ReadBacks() as methods:
        copies = [t.cpu(), t.to("cpu"), t.to(device="cpu:0"), t.detach().cpu()]
        values = [t.tolist(), t.numpy(), np.asarray(t), bool(t[1]), float(t[1]), int(t[1]), f"{t[1]}"]
        # On the device, nothing comes back; .to(a device object) is the blind spot (see to_host).
        kept = [t.to(torch.float64), t * 2, t.sum(), t.to(torch.device("cpu")), t.to(t)]
    assert all(c is not None for c in copies + values + kept)
    copied, read = ["cpu", "to", "to", "cpu"], ["tolist", "numpy", "__array__", "__bool__", "__float__", "__int__"]
    assert methods.seen == [*copied, *read, "__format__"]
    # The dispatcher sees only the scalar reads (bool, float, int, format): the copies never reach it.
    assert dispatched.seen == ["_local_scalar_dense[]"] * 4


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
    model = ImageClassifier(ResNet(depth=[1, 1, 1], widths=[4, 8, 8], stem="cifar", num_classes=10))
    with HostSyncs() as ours:
        model.train_metrics.update(preds, target)
    assert ours.seen == [] and "topk" in ours.ops


class RecordSteps(L.Callback):
    """Records host syncs and read-backs inside the steps that neither log (every log_every_n_steps) nor
    check for NaN (FiniteLoss reads its device-side flag every gpu_check_every steps, here the same n):
    the forward, backward, optimizer and scheduler steps, and every callback's batch hooks between."""

    def __init__(self, log_every_n_steps: int) -> None:
        # Lightning keeps the Trainer argument only as an undeclared attribute, so it is passed here too.
        self.n = log_every_n_steps
        self.modes: tuple[HostSyncs, ReadBacks] | None = None
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        step, n = trainer.global_step, self.n
        if step % n and (step + 1) % n:
            self.modes = HostSyncs(), ReadBacks()
            for mode in self.modes:
                mode.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.modes is not None:
            for mode in reversed(self.modes):
                mode.__exit__(None, None, None)
            self.seen[trainer.global_step] = self.modes[0].seen + self.modes[1].seen
            self.modes = None


def test_a_training_step_reads_nothing_back() -> None:
    data = SyntheticDataModule(num_classes=10, in_channels=1, image_size=8, train_size=96, val_size=16, batch_size=8)
    net = ResNet(depth=[1, 1, 1], widths=[4, 8, 8], stem="cifar", num_classes=10, in_channels=1)
    every = 5
    record = RecordSteps(log_every_n_steps=every)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=12,
        log_every_n_steps=every,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,  # a bar shows the loss: it reads it back at every refresh
        enable_model_summary=False,
        callbacks=[FiniteLoss(gpu_check_every=every, defer=True), RunFacts("sync-test"), record],  # as on a GPU
    )
    trainer.fit(ImageClassifier(net, schedule="cosine"), data)
    assert len(record.seen) >= 6
    assert {step: ops for step, ops in record.seen.items() if ops} == {}
