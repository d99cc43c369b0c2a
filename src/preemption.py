"""Preemption in one place: SIGUSR1/SIGTERM from the first line of a ``fit`` to the requeue.

- ``src/cli.py`` *blocks* SIGUSR1/SIGTERM before its heavy imports (standard library only there);
  ``hold_preemption_signals`` then installs a handler that remembers them and unblocks, so a signal
  that came while torch and Lightning were importing is delivered to it, not lost and not fatal.
- ``Preemption`` (a callback) acts on a held or new signal at the next step boundary: all ranks save
  ``last.ckpt`` together and raise ``Preempted``.
- ``exits`` wraps a run: it turns ``Preempted`` into the requeue (inside SLURM) and the exit code, and
  Lightning's own SIGTERM before training into 143; it always stops holding signals at the end.
- ``scripts/slurm/train.sbatch`` requeues after SIGUSR1 itself, once the job step has ended
  (``REQUEUE_FILE``).
"""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src.run import slurm_job_tag

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
_HELD: list[signal.Signals] = []  # SIGUSR1/SIGTERM that came while the process was starting
_HOLDING = {"on": False}


def block_preemption_signals() -> None:
    """Defer SIGUSR1/SIGTERM (pending, not lost) until ``hold_preemption_signals``; standard library only.

    Imports, data setup and the DDP rendezvous take seconds to minutes, and Slurm's warning signal may
    come at any time (it checks time limits every 30 s). USR1's default action kills the process, and
    the job is then lost without a requeue. Nothing may start a subprocess while they are blocked: the
    mask is inherited across exec.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def hold_preemption_signals(signums: tuple[int, ...] = SIGNALS) -> None:
    """Until training starts, remember SIGUSR1/SIGTERM instead of dying of them (``fit``); unblocks them.

    ``Preemption`` acts on a held signal after the first step. Once it has taken them (training ran), a
    late SIGUSR1 is ignored: the training is over, and a requeue would only repeat the test after it. A
    late SIGTERM does what it does by default. Calling it again while holding keeps what was held.
    """

    def hold(signum: int, frame: FrameType | None) -> None:
        if _HOLDING["on"]:
            _HELD.append(signal.Signals(signum))
        elif signum == signal.SIGUSR1:
            print("Received SIGUSR1 after training ended: ignored (nothing left to checkpoint or requeue)", flush=True)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    if not _HOLDING["on"]:
        _HELD.clear()
    _HOLDING["on"] = True
    for signum in signums:
        signal.signal(signum, hold)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)  # what came while blocked is delivered to `hold` now


def take_held_signals() -> list[signal.Signals]:
    """Stop holding; the signals held so far, in order."""
    _HOLDING["on"] = False
    held, _HELD[:] = list(_HELD), []
    return held


@contextlib.contextmanager
def exits(fit: bool) -> Iterator[None]:
    """Around one run: holds the preemption signals of a ``fit`` from its start, and leaves as a preempted job
    must. Anything that must close before the requeue (W&B's service) closes inside it."""
    if fit:
        hold_preemption_signals()  # a signal before the first step is acted on after it, not fatal
    try:
        yield
    except Preempted as stop:
        raise SystemExit(stop.finish()) from None
    except SIGTERMException:
        # Lightning's own, for a SIGTERM before Preemption's handlers are in place (the sanity check):
        # it exits 0, and a scheduler would count the cut-off run a success.
        print("Stopped by SIGTERM before training started: nothing to save; exiting with 143", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        take_held_signals()  # a fit that never reached training: signals act as by default again


def ignore_late_warnings() -> None:
    """At interpreter exit: Python resets its signal handlers to the defaults while it shuts down, and
    USR1's default kills: a warning signal arriving then would turn a finished job into a failed one."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


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
    together and raise :class:`Preempted`; once the Trainer has shut down, ``exits`` calls its
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
