"""The always-on training callbacks: NaN/inf stop, RNG state for exact resumes, preemption, failed starts.

- ``FiniteLoss`` stops at the first NaN/inf loss, before it reaches the weights, naming the step, and
  never lets a checkpoint with non-finite state be written.
- ``ResumeState`` restores the global RNGs so a resume at an epoch boundary replays the same shuffles.
- ``Preemption`` turns SIGUSR1 or SIGTERM into a checkpoint at a step boundary, then an exit and, in
  SLURM, ``scontrol requeue`` once the Trainer has shut down (``Preempted``).
- ``StartGuard`` knows whether a stage reached its first batch and cleans up a start that failed before.
"""

import contextlib
import math
import os
import random
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src.run import slurm_job_tag
from src.signals import take_held_signals


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


class StartGuard(Callback):
    """Whether a stage reached its first batch; if it failed before, remove what the failed start wrote.

    A start that fails before any batch (a bad checkpoint, a dataset error in ``setup``) is an input
    error, not a run: its fresh log directory would otherwise hold the rejected ``config.yaml`` next to
    real runs. Only the files a start writes are removed (never checkpoints), then the directory if empty.
    """

    FILES = ("config.yaml", "hparams.yaml", "metrics.csv", "classes.json")

    def __init__(self) -> None:
        self.started = False
        self.root: str | None = None  # the failed run's directory, for the error message

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.started = True

    def on_validation_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.started = True

    def on_test_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.started = True

    def on_predict_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.started = True

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.root = trainer.default_root_dir
        if self.started or not trainer.is_global_zero or not trainer.loggers:
            return
        log_dir = trainer.loggers[0].log_dir  # not trainer.log_dir: no collective inside an exception
        if log_dir is None or not Path(log_dir).is_dir():
            return
        for name in self.FILES:
            (Path(log_dir) / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (checkpoints, wandb/): keep it
            Path(log_dir).rmdir()


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


# Set by scripts/slurm/train.sbatch: after SIGUSR1, write the log's last line there and let the batch
# script requeue once the job step has ended (see Preempted.finish).
REQUEUE_FILE = "RESNET_REQUEUE_FILE"


class Preempted(SIGTERMException):
    """Raised by :class:`Preemption` at the step boundary after its checkpoint: leave the run as a kill would.

    A ``SystemExit`` (Lightning's ``SIGTERMException``): Lightning tears the loops down on its way out,
    which stops the DataLoader workers, and :meth:`finish` then requeues and says so. Requeuing only
    after that matters: ``scontrol requeue`` makes Slurm SIGTERM every process of the job step, and a
    worker that dies of it makes the main process raise "DataLoader worker (pid ...) is killed by
    signal: Terminated" and exit 1, so that every preemption looked like a crash in the job log.
    """

    def __init__(self, code: int, signame: str, step: int, epoch: int, path: Path, requeue: bool, how: str) -> None:
        super().__init__(code)
        self.status = code  # SystemExit.code is typed str | int | None
        self.signame, self.step, self.epoch, self.path = signame, step, epoch, path
        self.requeue, self.how = requeue, how

    def finish(self) -> int:
        """After the Trainer has shut down: all ranks meet, rank 0 requeues and writes the last line of the
        log; returns the exit code: 0 once requeued or after SIGUSR1, 143 when a SIGTERM cut the run off."""
        # From here on the requeue's SIGTERM is expected: it must neither interrupt nor kill the exit.
        for signum in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(signum, signal.SIG_IGN)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's workers are gone before anyone requeues
        job = slurm_job_tag() if self.requeue else None
        if getattr(rank_zero_only, "rank", 0) != 0:
            return 0 if job is not None else self.status
        where = f"at global step {self.step}, epoch {self.epoch}; checkpoint {self.path}"
        if job is None:
            if self.signame == "SIGUSR1" and self.requeue:
                rank_zero_warn("SIGUSR1 outside a SLURM job: checkpoint saved, nothing to requeue")
            tail = f"exiting with {self.status}: the run is not finished, {self.how}" if self.status else "exiting"
            print(f"Stopped by {self.signame} {where}; {tail}", flush=True)
            return self.status
        handoff = os.environ.get(REQUEUE_FILE)
        if handoff and self.signame == "SIGUSR1":
            # scripts/slurm/train.sbatch requeues once every task has exited: no step left to kill.
            Path(handoff).write_text(f"Preempted ({self.signame}) {where}")
            return 0
        requeued, what = requeue(job)
        print(f"Preempted ({self.signame}) {where}; {what}", flush=True)
        return 0 if requeued else self.status


def last_training_step(trainer: Trainer) -> bool:
    """Whether ``fit`` stops after the batch that just ended (``max_steps`` or the last batch of ``max_epochs``);
    the same on every rank."""
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return True
    last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
    return bool(last_epoch and trainer.is_last_batch)


def requeue(job: str) -> tuple[bool, str]:
    """``scontrol requeue`` the job unless its owner cancelled it; whether it was, and what happened.

    SIGTERM comes with a hard time limit, an eviction and ``scancel`` alike: only the job's state
    tells a cancel, after which the job must stay gone.
    """
    show = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=120)
    state = dict(kv.split("=", 1) for kv in show.stdout.split() if "=" in kv).get("JobState", "?")
    if state.startswith("CANCELLED"):
        return False, f"SLURM job {job} was cancelled: not requeued"
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        error = result.stderr.strip()
        return False, f"`scontrol requeue {job}` failed ({result.returncode}: {error}); resubmit to resume"
    return True, f"requeued SLURM job {job} ({state.lower()}), which resumes from it"


class Preemption(Callback):
    """On SIGUSR1 (``sbatch --signal=SIGUSR1@90``) or SIGTERM (a hard time limit, ``scancel``, an
    eviction, ``kill``): checkpoint at the next step boundary, then leave and requeue under SLURM.

    Lightning's own auto-requeue saves from inside the signal handler, at whatever bytecode the
    signal interrupts, and does a collective there; ranks can then hang or save a torn state
    (Lightning-AI/pytorch-lightning#21406). And on SIGTERM alone Lightning finishes the epoch, saves
    nothing and exits 0, so a scheduler counts the cut-off run a success. Here the handler only sets a
    flag; at the next step boundary all ranks agree through one all-reduce, save ``last.ckpt``
    together and raise :class:`Preempted`; once the Trainer has shut down, ``src.cli.main`` calls its
    ``finish``: rank 0 runs ``scontrol requeue`` inside a SLURM job, and the process exits 0 after
    SIGUSR1 or a requeue (the job goes on as planned) and 128 + 15 = 143 after a SIGTERM otherwise
    (the run did not finish; the same command resumes it from that checkpoint).
    """

    def __init__(
        self,
        signums: tuple[int, ...] = (signal.SIGUSR1, signal.SIGTERM),
        requeue: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        resumable: bool = True,
    ) -> None:
        self.signums = tuple(signal.Signals(s) for s in signums)
        self.resumable = resumable  # a stable run directory: the same command resumes by itself
        self.requeue = requeue
        self.checkpoint_dir = checkpoint_dir  # the run layout's; None: beside the run's other checkpoints
        self.received: signal.Signals | None = None
        self.preempted = False
        self._previous: dict[signal.Signals, Any] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Here, after the Trainer installed its own handlers, so that ours replace them: Lightning's
        # SIGTERM handling would otherwise also fire, and under DDP leave at the next step with exit 0
        # and no checkpoint (its per-step SIGTERM broadcast in the training epoch loop).
        self._previous = {s: signal.signal(s, self._on_signal) for s in self.signums}
        for signum in take_held_signals():  # what came while the process was starting
            self._on_signal(signum, None)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            for signum, previous in self._previous.items():
                # Lightning restores the handlers from before the fit before this hook runs; putting
                # back the ones we replaced would revive Lightning's SIGTERM handler after training
                # (it broadcasts from inside the handler, and fails once a peer has gone).
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)
            self._previous = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: the work happens between steps, on all ranks together. SIGTERM outranks USR1.
        if self.received is None or signum == signal.SIGTERM:
            self.received = signal.Signals(signum)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.preempted or not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        self.preempted = True
        # A rank that saw no signal itself (only a peer did) follows the peer's: SIGTERM unless told USR1.
        terminated = trainer.strategy.reduce_boolean_decision(self.received != signal.SIGUSR1, all=False)
        if not terminated and last_training_step(trainer):
            # USR1 is a warning, and training ends at this step anyway: a requeue here would resume past the
            # end and skip the final validation (and the best checkpoint it may be), so finish instead.
            rank_zero_info(f"Received SIGUSR1 at the last training step ({trainer.global_step}): finishing, no requeue")
            return
        name = "SIGTERM" if terminated else "SIGUSR1"
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)  # all ranks: Lightning writes on rank 0 and barriers
        step, epoch = trainer.global_step, trainer.current_epoch
        rank_zero_info(f"Received {name} at global step {step}, epoch {epoch}: saved {path}")
        code = 128 + signal.SIGTERM if terminated else 0  # unless requeued (Preempted.finish)
        how = "rerun the same command to resume" if self.resumable else f"resume with --ckpt_path {path}"
        # Leave now, as a kill would: a normal stop would still run the epoch-end hooks (epoch-interval
        # LR schedulers, checkpoints marking the epoch done) for an epoch the resumed run finishes.
        raise Preempted(code, name, step, epoch, path, self.requeue, how)

    def checkpoint_path(self, trainer: Trainer) -> Path:
        """``last.ckpt`` in the run's checkpoint directory, where auto-resume looks."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir) / "last.ckpt"
        dirs = [cb.dirpath for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
        return Path(dirs[0] if dirs else os.path.join(trainer.default_root_dir, "checkpoints")) / "last.ckpt"
