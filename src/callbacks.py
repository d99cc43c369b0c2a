"""The always-on training callbacks: NaN/inf stop, RNG state for exact resumes.

- ``FiniteLoss`` stops at the first NaN/inf loss, before it reaches the weights, naming the step, and
  never lets a checkpoint with non-finite state be written.
- ``ResumeState`` restores the global RNGs so a resume at an epoch boundary replays the same shuffles.

Preemption (SIGUSR1/SIGTERM, the requeue) is ``src/preemption.py``.
"""

import math
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info


class FiniteLoss(Callback):
    """Stop with a FloatingPointError at the first NaN/inf training loss, naming the step.

    On the CPU it is checked before backward, every step, so the bad step never reaches the
    weights. On a GPU reading the loss every step would stall the pipeline (a host sync per
    step), so the losses are kept on the device (no kernel per step) and their finiteness read
    back in one transfer every ``gpu_check_every`` steps and before every checkpoint save: the
    run still stops naming the exact step.

    A finite loss can still produce non-finite weights (an lr so large that the update overflows),
    so every checkpoint's model and optimizer tensors are checked before it is written: one
    reduction per save, nothing per step. A non-finite state stops the run naming the step and the
    tensors, and the previous checkpoint stays in place: it is finite, though it may already hold
    diverged weights (then restart from an earlier checkpoint). On a
    cluster the non-zero exit ends the job (srun ``--kill-on-bad-exit``) instead of burning the
    allocation on NaNs.
    """

    def __init__(self, gpu_check_every: int = 50, defer: bool | None = None) -> None:
        self.gpu_check_every = gpu_check_every
        self.defer = defer  # None: defer on accelerators only
        # Deferred: the losses since the last check and their steps. Keeping the tensors launches nothing
        # per step; the check stacks them and reads their finiteness back in one transfer.
        self._losses: list[torch.Tensor] = []
        self._steps: list[int] = []

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach()
        if not (self.defer if self.defer is not None else value.device.type != "cpu"):
            # On the CPU a read is no sync: a Python float check, no kernel launched
            finite = math.isfinite(value.item()) if value.numel() == 1 else bool(torch.isfinite(value).all())
            if not finite:
                self._raise(
                    trainer, trainer.global_step, f"{value.float().sum().item()}", "stopped before the optimizer step"
                )
            return
        self._losses.append(value)
        self._steps.append(trainer.global_step)
        if trainer.global_step % self.gpu_check_every == 0:
            self._check(trainer)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._check(trainer)
        # Raising here aborts the save before anything is written: the previous checkpoint stays.
        bad = non_finite(checkpoint.get("state_dict", {}), "state_dict")
        bad += non_finite(checkpoint.get("optimizer_states", []), "optimizer")
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise FloatingPointError(
                f"the model or optimizer state is not finite at global step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}): {shown}. The checkpoint was not saved; the previous one holds finite "
                "weights (they may already have diverged). The loss was finite, so an update overflowed: lower the lr "
                "or add warm-up, and restart from an earlier checkpoint or a new run directory."
            )

    def _check(self, trainer: Trainer) -> None:
        if not self._losses:
            return
        losses, steps = self._losses, self._steps
        self._losses, self._steps = [], []
        # One value per loss (a sum stays non-finite if any element is), one read-back for all
        finite = torch.isfinite(torch.stack([v if v.ndim == 0 else v.float().sum() for v in losses])).tolist()
        if not all(finite):
            self._raise(trainer, steps[finite.index(False)], "not finite", f"noticed at step {trainer.global_step}")

    def _raise(self, trainer: Trainer, step: int, value: str, when: str) -> None:
        raise FloatingPointError(
            f"training loss is {value} at global step {step} (epoch {trainer.current_epoch}, batch "
            f"{trainer.fit_loop.epoch_loop.batch_idx}); {when}. Lower the lr, add warm-up or check the data; "
            "the last checkpoint holds finite weights from before this step."
        )


def non_finite(tree: Any, prefix: str) -> list[str]:
    """Names of the floating-point tensors in ``tree`` (nested dicts/lists) holding NaN or inf."""
    found: list[tuple[str, torch.Tensor]] = []

    def walk(node: Any, name: str) -> None:
        if isinstance(node, torch.Tensor):
            if node.is_floating_point() or node.is_complex():
                found.append((name, node))
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{name}.{key}")
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                walk(value, f"{name}[{i}]")

    walk(tree, prefix)
    if not found:
        return []
    ok: dict[int, bool] = {}
    for device in {t.device for _, t in found}:  # one device-to-host read per device, not one per tensor
        idx = [i for i, (_, t) in enumerate(found) if t.device == device]
        ok.update(zip(idx, torch.stack([torch.isfinite(found[i][1]).all() for i in idx]).tolist(), strict=True))
    return [name for i, (name, _) in enumerate(found) if not ok[i]]


class ResumeState(Callback):
    """Keeps the global torch/numpy/python RNG states in checkpoints and reports where a resume starts.

    The default sampler draws each epoch's shuffle seed from the global RNG, so without the saved
    states a run resumed at an epoch boundary would shuffle differently from an uninterrupted one.
    """

    def state_dict(self) -> dict[str, Any]:
        # numpy's state holds an ndarray, which torch.load(weights_only=True) refuses (so would
        # `python -m src.cli test --ckpt_path ...`): store its keys as a tensor instead.
        name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
        states: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (name, torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            states["torch.cuda"] = torch.cuda.get_rng_state_all()
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" not in state_dict:
            return
        states = state_dict["rng"]
        torch.set_rng_state(states["torch"])
        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        version, inner, gauss_next = states["python"]
        random.setstate((version, tuple(inner), gauss_next))  # tuples come back as lists from some loaders
        if "torch.cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["torch.cuda"])

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path:
            rank_zero_info(
                f"Resumed training at global step {trainer.global_step}, epoch {trainer.current_epoch}"
                f" from {trainer.ckpt_path}"
            )
