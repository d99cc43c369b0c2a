"""The LightningModule: a network, its loss (CE or BCE, batch mixing), top-1/top-5 metrics, optimizer, schedule."""

import importlib.util
import math
import os
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import SGD, AdamW
from torch.optim.lr_scheduler import ConstantLR, LambdaLR, LinearLR, ReduceLROnPlateau
from torchmetrics import Metric
from torchvision.transforms import v2

from src.choices import check_choices
from src.models.checkpoint_fit import check_checkpoint_fits

STAGES = ("train", "val", "test")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs


def use_compile_cache(configured: str | None, root_dir: str | os.PathLike) -> Path:
    """Point inductor's caches (FX graphs, AOTAutograd, Triton kernels) at a directory that outlives the process.

    Inductor's default is ``/tmp/torchinductor_<user>``: node-local and wiped with the job, so every
    requeued segment and every rerun compiled from scratch. ``configured`` (``model.compile_cache``, a
    directory several runs may share), else ``$TORCHINDUCTOR_CACHE_DIR`` when set before the run, else
    ``<trainer.default_root_dir>/compile_cache`` (the run directory, shared by its segments). Triton's
    cache follows unless ``$TRITON_CACHE_DIR`` is set.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # Importing Lightning sets the variable to inductor's default: only another value is the user's.
    user = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    user = None if user is None or Path(user).resolve() == Path(default_cache_dir()).resolve() else user
    path = Path(configured or user or Path(root_dir) / "compile_cache").resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)  # read by inductor at each cache access
    return path


@dataclass
class LRFactor:
    """lr multiplier as a function of the optimizer step: warm-up times the main schedule.

    A plain object (not a closure) so LambdaLR can save and restore it in checkpoints.
    """

    schedule: str
    total_steps: int
    milestones: list[int] = field(default_factory=list)  # in steps
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_start_factor: float = 0.1
    warmup_mode: str = "linear"

    def __call__(self, step: int) -> float:
        if self.schedule == "multistep":
            factor = self.gamma ** bisect_right(self.milestones, step)
        elif self.schedule == "cosine":
            factor = 0.5 * (1 + math.cos(math.pi * min(step, self.total_steps) / max(1, self.total_steps)))
        else:  # constant
            factor = 1.0
        if step < self.warmup_steps:
            if self.warmup_mode == "constant":  # ResNet-110: 0.01 until training error < 80% (~400 its)
                factor *= self.warmup_start_factor
            else:
                factor *= self.warmup_start_factor + (1 - self.warmup_start_factor) * step / self.warmup_steps
        return factor


class TopKAccuracy(Metric):
    """Top-k accuracies (fractions) for several k at once: per k, the mean over samples of "the label is
    among the k highest scores".

    Each equal to torchmetrics' ``MulticlassAccuracy(top_k=k, average="micro")`` (tested), without its host
    syncs (for k > 1 it checks its one-hot input with ``.item()`` twice per update, each a wait for the GPU
    to drain), and one update for all k: one ``topk`` and one pass through torchmetrics' update wrapper,
    whose Python costs more per step on the host than a small network's kernels. The counts stay on the
    device and are all-reduced across DDP ranks in ``compute()``.
    """

    full_state_update = False
    hits: torch.Tensor
    total: torch.Tensor

    def __init__(self, ks: Sequence[int]) -> None:
        super().__init__()
        self.ks = tuple(ks)
        self.add_state("hits", torch.zeros(len(self.ks), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        k = min(max(self.ks), preds.shape[-1])
        # found[:, j]: the label is among the j + 1 highest scores
        found = (preds.topk(k, dim=-1).indices == target.unsqueeze(-1)).cumsum(dim=-1) > 0
        hits = found[:, [min(k, kk) - 1 for kk in self.ks]].sum(dim=0)
        # Out of place: a state reset inside `validate` (inference mode) is an inference tensor, which
        # an in-place `+=` would refuse to update in `fit`'s validation (no_grad).
        self.hits = self.hits + hits
        self.total = self.total + target.numel()

    def compute(self) -> torch.Tensor:
        return self.hits.float() / self.total.clamp_min(1)


def multi_crop_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``[B, K]`` of multi-crop inputs ``[B, n, C, H, W]``: the mean of the
    crops' softmax, as the ResNet paper's 10-crop testing averages its scores."""
    b, n = x.shape[:2]
    return model(x.flatten(0, 1)).softmax(dim=-1).view(b, n, -1).mean(dim=1)


class ImageClassifier(L.LightningModule):
    """Wraps an image classifier network (``net``, e.g. ``src.models.resnet.ResNet``).

    The number of classes is read from the network's ``fc`` layer, so it is set once
    (the CLI links it from the DataModule). Metrics are logged in percent as
    ``{train,val,test}/{acc1,err1,acc5,err5}`` plus ``{stage}/loss``; the best
    checkpoint is the lowest ``val/err1``.

    Schedules: ``multistep`` (x ``gamma`` at each milestone: the papers), ``plateau``
    (x ``gamma`` when ``val/err1`` stops improving: the ImageNet paper), ``cosine``,
    ``constant``; each optionally preceded by ``warmup_steps`` of warm-up starting at
    ``warmup_start_factor`` x lr, ramping linearly or held constant (ResNet-110).

    Regularisation: ``label_smoothing``; ``mixup_alpha``/``cutmix_alpha`` mix each training batch
    (soft targets; with both, each batch picks one); ``loss: bce`` trains with per-class sigmoid
    cross-entropy on the (mixed, smoothed) targets, as the "ResNet strikes back" recipes do.

    Optimizers: ``sgd`` (the papers: ``momentum``, ``nesterov``), ``adamw`` (``betas``; decoupled
    weight decay) or ``lamb`` (timm's LAMB with its defaults, as the "ResNet strikes back" recipes use
    it; the optional ``lamb`` extra); ``no_weight_decay_bn_bias`` keeps weight decay off BN and biases.

    Scale: ``lr_scaling: linear`` multiplies lr by global batch / ``base_batch_size``;
    ``channels_last`` stores weights and inputs NHWC (faster convs under bf16 on GPUs);
    ``compile`` compiles the network in place with torch.compile, in ``compile_mode`` (``reduce-overhead``:
    CUDA graphs of forward and backward for small, host-bound nets on a GPU; evaluation runs eager), its
    artefacts cached in ``compile_cache`` (see ``use_compile_cache``) so that reruns and requeued segments
    reuse them.

    Loading a checkpoint whose network arguments differ from ``net``'s (another ``unit`` or
    ``shortcut`` with the same tensor shapes) is refused, naming the arguments, unless the run allows
    it (``allow_net_change``, set by the CLI's ``--allow_net_change``: fine-tuning into a changed network
    on purpose). A run decision, so an attribute and not a hyperparameter.
    """

    allow_net_change = False

    def __init__(
        self,
        net: nn.Module,
        lr: float = 0.1,
        optimizer: Literal["sgd", "adamw", "lamb"] = "sgd",
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-4,
        nesterov: bool = False,
        no_weight_decay_bn_bias: bool = False,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        loss: Literal["ce", "bce"] = "ce",
        schedule: Literal["multistep", "plateau", "cosine", "constant"] = "multistep",
        milestones: Sequence[int] = (30, 60),
        milestone_unit: Literal["epoch", "step"] = "epoch",
        gamma: float = 0.1,
        plateau_patience: int = 5,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.1,
        warmup_mode: Literal["linear", "constant"] = "linear",
        lr_scaling: Literal["none", "linear"] = "none",
        base_batch_size: int = 256,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default",
        compile_cache: str | None = None,
    ) -> None:
        super().__init__()
        for key, value in dict(lr=lr, warmup_start_factor=warmup_start_factor).items():
            if value <= 0:
                raise ValueError(f"{key}={value} must be positive")
        for key, value in dict(momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps).items():
            if value < 0:
                raise ValueError(f"{key}={value} must be >= 0")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas={list(betas)} must each be in [0, 1)")
        for key, value in dict(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha).items():
            if value < 0:
                raise ValueError(f"{key}={value} must be >= 0 (0 = off)")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        check_choices(ImageClassifier.__init__, locals())
        if optimizer == "lamb" and importlib.util.find_spec("timm") is None:
            raise ValueError("optimizer='lamb' uses timm's LAMB, and timm is not installed: pip install timm")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones={list(milestones)} must be increasing")
        if base_batch_size <= 0:
            raise ValueError(f"base_batch_size={base_batch_size} must be positive")
        if compile_mode != "default" and not compile:
            raise ValueError(f"compile_mode={compile_mode!r} applies to a compiled network: set compile: true")
        self.save_hyperparameters()
        # Before DDP wraps the net (torch#47163); inputs follow in forward().
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(memory_format=self.memory_format)
        fc = getattr(net, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise ValueError(f"net {type(net).__name__} has no nn.Linear 'fc' head to read num_classes from")
        self.num_classes = fc.out_features
        topk = {"acc1": 1, "acc5": 5} if self.num_classes > 5 else {"acc1": 1}
        self.metric_names = list(topk)
        metrics = TopKAccuracy(list(topk.values()))
        # One metric per stage; a ModuleDict keyed "train" would shadow nn.Module.train.
        self.train_metrics, self.val_metrics, self.test_metrics = (metrics.clone() for _ in STAGES)
        # Batch mixing (torchvision's v2 MixUp/CutMix: one draw per batch, as in the papers and
        # torchvision's reference scripts); with both, each batch picks one of them.
        mixers: list[nn.Module] = []
        if mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=self.num_classes))
        if cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=self.num_classes))
        self.mix: nn.Module | None = v2.RandomChoice(mixers) if mixers else None
        self._train_loss: torch.Tensor | None = None  # [sum of loss x batch size, images] of this epoch
        self._logged_train_step = False

    def stage_metrics(self, stage: str) -> TopKAccuracy:
        return getattr(self, f"{stage}_metrics")

    def configure_model(self) -> None:
        # nn.Module.compile() compiles in place, so state_dict keys (and checkpoints) stay
        # those of the plain net, unlike `self.net = torch.compile(self.net)` (PL#20233).
        if self.hparams["compile"] and not getattr(self, "_compiled", False):
            mode = self.hparams.get("compile_mode", "default")
            device = self.trainer.strategy.root_device
            if mode in CUDA_GRAPH_MODES and device.type != "cuda":
                raise ValueError(
                    f"model.compile_mode={mode!r} captures CUDA graphs, which need a CUDA device, and this run "
                    f"trains on {device.type}: set trainer.accelerator=gpu or compile_mode: default"
                )
            use_compile_cache(self.hparams.get("compile_cache"), self.trainer.default_root_dir)
            self.net.compile(mode=None if mode == "default" else mode)
            self._compiled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        if not self.training and self.hparams.get("compile_mode", "default") in CUDA_GRAPH_MODES:
            # Evaluation outside the graphs: its last batch is smaller, and each new shape (and eval-mode
            # BN) would record graphs of its own. nn.Module.compile() compiles __call__, not forward.
            return self.net.forward(x)
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        if x.ndim == 5:  # multi-crop test batch [B, crops, C, H, W] (ImageNet 10-crop testing)
            probs = multi_crop_probs(self, x)
            loss = F.nll_loss(probs.clamp_min(1e-12).log(), y)
            self.stage_metrics(stage).update(probs, y)
            self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True)
            return loss
        target = soft_target = None
        if stage == "train" and self.mix is not None:
            x, soft_target = self.mix(x, y)  # the labels of the unmixed images still score train/acc
        logits = self(x)
        smoothing = self.hparams["label_smoothing"] if stage == "train" else 0.0
        if soft_target is None and self.hparams["loss"] == "ce":
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        else:
            # Targets and loss in float32: bf16 would round a smoothed 0.9 to 0.898.
            target = F.one_hot(y, self.num_classes).float() if soft_target is None else soft_target.float()
            target = target * (1 - smoothing) + smoothing / self.num_classes
            if self.hparams["loss"] == "bce":  # per-class sigmoid, as in "ResNet strikes back"
                loss = F.binary_cross_entropy_with_logits(logits.float(), target)
            else:
                loss = F.cross_entropy(logits.float(), target)
        self.stage_metrics(stage).update(logits.detach(), y)
        if stage == "train":
            self._log_train_loss(loss, y.shape[0])
        else:
            self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True)
        return loss

    def _log_train_loss(self, loss: torch.Tensor, n: int) -> None:
        """``train/loss`` at the steps the loggers write (and a fit's first), ``train/loss_epoch`` at the end.

        ``self.log`` costs about half a millisecond of Python per call on the host (Lightning moves its
        result entry to the value's device at every call), as much as a small network's whole step. The
        epoch's mean is summed on the device instead, weighted by batch size as Lightning's would be.
        """
        weighted = loss.detach().float() * n
        if self._train_loss is None or self._train_loss.device != loss.device:
            self._train_loss = torch.zeros(2, device=loss.device)
        self._train_loss = self._train_loss + torch.stack([weighted, weighted.new_tensor(n)])
        if self._trainer is None:  # a bare call of the step: nothing to log to
            return
        if self._trainer._logger_connector.should_update_logs or not self._logged_train_step:
            self._logged_train_step = True
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.get("compile_mode", "default") in CUDA_GRAPH_MODES:
            # A new iteration: the graphs' outputs of the last step may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Before the weights load: a changed architecture fails naming the keys and config values.
        if self.strict_loading:
            try:
                source = self.trainer.ckpt_path or "the checkpoint"
            except RuntimeError:  # not attached to a Trainer (a plain load_from_checkpoint)
                source = "the checkpoint"
            # Checkpoints from before it became a run option saved it as a hyperparameter: not a difference.
            checkpoint.get("hyper_parameters", {}).pop("allow_net_change", None)
            check_checkpoint_fits(
                self, checkpoint, source=f"checkpoint {source}", allow_net_change=self.allow_net_change
            )

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities ``[B, num_classes]``; the batch may carry labels or not."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return multi_crop_probs(self, x) if x.ndim == 5 else self(x).softmax(dim=-1)

    def _log_epoch(self, stage: str) -> None:
        # compute() all-reduces the metric state across DDP ranks, so every rank logs
        # the global value; sync_dist would only average identical numbers.
        metrics = self.stage_metrics(stage)
        # An epoch that a resume re-enters after its last batch (the checkpoint was saved at its end)
        # sees no batch here: logging it would repeat the epoch with accuracy 0 (error 100).
        if metrics.update_count == 0:
            return
        values = metrics.compute().reshape(-1)  # torchmetrics squeezes a one-k result to 0-d
        metrics.reset()
        for name, acc in zip(self.metric_names, values, strict=True):
            self.log(f"{stage}/{name}", 100 * acc, prog_bar=stage == "val" and name == "acc1")
            self.log(f"{stage}/err{name[3:]}", 100 * (1 - acc), prog_bar=stage == "val" and name == "acc1")

    def on_train_epoch_start(self) -> None:
        self._train_loss = None

    def on_train_start(self) -> None:
        self._logged_train_step = False

    def on_train_epoch_end(self) -> None:
        if self._train_loss is not None:
            total, count = self._train_loss
            self.log("train/loss_epoch", total / count)
            self._train_loss = None
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def param_groups(self) -> list[dict[str, Any]]:
        """One group with weight decay and, if asked, one without for BN and biases (1-d tensors)."""
        wd = self.hparams["weight_decay"]
        params = [p for p in self.net.parameters() if p.requires_grad]
        if not self.hparams["no_weight_decay_bn_bias"]:
            return [{"params": params, "weight_decay": wd}]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]

    def steps_per_epoch(self) -> int:
        trainer = self.trainer
        total = trainer.estimated_stepping_batches  # also sets up the train dataloader
        batches = trainer.num_training_batches
        if math.isinf(batches):
            return max(1, int(total) // max(1, trainer.max_epochs or 1))
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches))

    def global_batch_size(self) -> int | None:
        """Images per optimizer step over all processes; None when the DataModule has no batch_size."""
        per_device = getattr(getattr(self.trainer, "datamodule", None), "batch_size", None)
        if per_device is None:
            return None
        return int(per_device) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def scaled_lr(self) -> float:
        """``lr``, or with ``lr_scaling: linear`` lr x global_batch / base_batch_size (Goyal et al. 2017).

        The papers' lr 0.1 is for batch 256 (ImageNet) or 128 (CIFAR: set base_batch_size 128);
        on 8 GPUs x 64 images the linear rule gives 0.1 x 512 / 256 = 0.2.
        """
        lr, hp = self.hparams["lr"], self.hparams
        if hp["lr_scaling"] == "none":
            return lr
        batch = self.global_batch_size()
        if batch is None:
            raise ValueError("lr_scaling='linear' needs a DataModule with a batch_size attribute")
        return lr * batch / hp["base_batch_size"]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        lr = self.scaled_lr()
        optimizer: torch.optim.Optimizer
        if hp["optimizer"] == "adamw":  # decoupled weight decay (Loshchilov & Hutter); momentum is SGD's
            optimizer = AdamW(self.param_groups(), lr=lr, betas=tuple(hp["betas"]))
        elif hp["optimizer"] == "lamb":  # layer-wise trust ratio on Adam's update (You et al. 2020)
            from timm.optim import Lamb  # optional, and slow to import

            optimizer = Lamb(self.param_groups(), lr=lr, betas=tuple(hp["betas"]))
        else:
            optimizer = SGD(self.param_groups(), lr=lr, momentum=hp["momentum"], nesterov=hp["nesterov"])
        total = int(min(self.trainer.estimated_stepping_batches, 2**62))
        scale = self.steps_per_epoch() if hp["milestone_unit"] == "epoch" else 1
        factor = LRFactor(
            schedule=hp["schedule"],
            total_steps=total,
            milestones=[m * scale for m in hp["milestones"]],
            gamma=hp["gamma"],
            warmup_steps=hp["warmup_steps"],
            warmup_start_factor=hp["warmup_start_factor"],
            warmup_mode=hp["warmup_mode"],
        )
        if hp["schedule"] != "plateau":
            return [optimizer], [{"scheduler": LambdaLR(optimizer, factor), "interval": "step"}]
        # LambdaLR recomputes lr from the base lr every step and would undo the plateau
        # cuts; the chainable warm-up schedulers leave the lr alone once they are done.
        schedulers: list[dict[str, Any]] = []
        if hp["warmup_steps"]:
            start, steps = hp["warmup_start_factor"], hp["warmup_steps"]
            warmup = (
                ConstantLR(optimizer, factor=start, total_iters=steps)
                if hp["warmup_mode"] == "constant"
                else LinearLR(optimizer, start_factor=start, total_iters=steps)
            )
            schedulers.append({"scheduler": warmup, "interval": "step"})
        plateau = ReduceLROnPlateau(optimizer, mode="min", factor=hp["gamma"], patience=hp["plateau_patience"])
        schedulers.append({"scheduler": plateau, "monitor": "val/err1", "interval": "epoch"})
        return [optimizer], schedulers
