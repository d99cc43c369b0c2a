"""Fault tolerance: atomic checkpoints, a stable run directory per job, auto-resume, preemption, NaN stop.

A run killed (``kill -9``, node failure), preempted (SIGUSR1 before the time limit) or requeued
comes back in the same run directory and continues from its newest checkpoint:

- ``AtomicCheckpointIO`` writes ``<path>.tmp`` beside the target, fsyncs it and renames it over the
  target, so a kill during a save leaves the previous checkpoint intact (Lightning's own save goes
  through an fsspec transaction in $TMPDIR: Lightning-AI/pytorch-lightning#20270, fsspec#1827).
- ``job_run_dir`` names the run directory after the SLURM job (``runs/<name>/slurm-<job id>``): a
  requeued job keeps its id, finds its own checkpoints and ``find_resume_checkpoint`` picks the newest.
- ``Preemption`` turns SIGUSR1 into checkpoint + ``scontrol requeue`` + stop, at a step boundary.
- ``ResumeState`` restores the global RNGs so a resume at an epoch boundary replays the same shuffles.
- ``FiniteLoss`` stops at the first NaN/inf loss, before it reaches the weights, naming the step.
- ``check_checkpoint_fits`` explains an architecture change on resume by key and config value.
"""

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

TMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``<path>.tmp`` in the same directory, fsync, then ``os.replace``.

    Lightning's own save goes through an fsspec transaction whose temp file lives in ``$TMPDIR``;
    when that is another filesystem (node-local /tmp, checkpoints on NFS/Lustre) the final move is
    copy + delete and a kill mid-copy truncates the checkpoint. A rename within one directory is
    atomic, so readers see the old file or the new one, never a partial one. Remote paths (s3://...)
    keep Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + TMP_SUFFIX)
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)  # make the rename itself durable


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- run directory and resume ---------------------------------------------------------------------


def slurm_job_tag() -> str | None:
    """``<job id>`` (``<array job id>_<task id>`` for arrays) when Lightning runs under SLURM, else None.

    The id survives ``scontrol requeue``, so every restart of a job maps to the same run directory.
    """
    if not SLURMEnvironment.detect():
        return None
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    job_id = SLURMEnvironment.job_id()
    return None if job_id is None else str(job_id)


def job_run_dir(save_dir: str | os.PathLike, name: str) -> Path | None:
    """``<save_dir>/<name>/slurm-<job>`` inside a SLURM job, None outside one."""
    tag = slurm_job_tag()
    return None if tag is None else Path(save_dir) / name / f"slurm-{tag}"


def find_resume_checkpoint(checkpoint_dir: str | os.PathLike, root_dir: str | os.PathLike) -> Path | None:
    """The newest of ``<checkpoint_dir>/last*.ckpt`` and Lightning's ``<root_dir>/hpc_ckpt_*.ckpt``.

    Lightning resumes from hpc checkpoints only when ``ckpt_path`` is unset and from ``last`` only
    when it is ``"last"`` (Lightning's ``_CheckpointConnector._parse_ckpt_path``); whichever was written
    most recently holds the latest step.
    Unfinished ``*.ckpt.tmp`` files from a kill during a save never match.
    """
    candidates = [*Path(checkpoint_dir).glob("last*.ckpt"), *Path(root_dir).glob("hpc_ckpt_*.ckpt")]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)


def check_checkpoint_fits(module: nn.Module, checkpoint: Mapping[str, Any], source: str = "the checkpoint") -> None:
    """Raise a ValueError naming the mismatched parameters (and config values) when the weights don't fit.

    Called before the state dict is loaded, so a resumed run whose config changed the architecture
    fails with the keys that differ instead of torch's generic ``load_state_dict`` error.
    """
    saved: Mapping[str, Any] = checkpoint.get("state_dict", {})
    expected = module.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [
        f"{k}: checkpoint {list(saved[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f"{source} does not fit the model: its architecture differs from the current config."]
    old, new = _flatten(checkpoint.get("hyper_parameters", {})), _flatten(getattr(module, "hparams", {}))
    changed = [f"model.{k}: {old.get(k, '<unset>')} in checkpoint, {new.get(k, '<unset>')} now" for k in sorted(
        k for k in set(old) | set(new) if old.get(k) != new.get(k)
    )]  # fmt: skip
    for title, items in (
        ("config values that differ", changed),
        ("shape mismatches", shapes),
        ("missing in checkpoint", missing),
        ("unexpected in checkpoint", unexpected),
    ):
        if items:
            shown = items[:12] + ([f"... and {len(items) - 12} more"] if len(items) > 12 else [])
            lines.append(f"{title} ({len(items)}):\n  " + "\n  ".join(shown))
    lines.append("Resume with the config the run was started with, or start a new run directory.")
    raise ValueError("\n".join(lines))


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested hparams (dicts, jsonargparse Namespaces) as ``{"net.init_args.widths": "[16, 32]"}``."""
    if hasattr(tree, "as_dict"):
        tree = tree.as_dict()
    if not isinstance(tree, Mapping):
        return {prefix.rstrip("."): str(list(tree) if isinstance(tree, tuple) else tree)}
    out: dict[str, str] = {}
    for key, value in tree.items():
        if not str(key).startswith("_"):  # _instantiator, _class_path: bookkeeping of the CLI
            out.update(_flatten(value, f"{prefix}{key}."))
    return out


# -- CLI wiring (src/cli.py) ----------------------------------------------------------------------

RUN_DIR_HELP = (
    "stable run directory: checkpoints go to <run_dir>/checkpoints, logs to <run_dir>/version_<n> (one per"
    " restart), and `fit` resumes from the newest checkpoint there. Default inside a SLURM job:"
    " <logger save_dir>/<logger name>/slurm-<job id>, so a requeued job resumes by itself; outside SLURM: unset"
    " (a new runs/<name>/version_<n> per call, no resume)"
)


def _logger_configs(logger: Any) -> list[Any]:
    items = logger if isinstance(logger, list) else [logger]
    return [lg for lg in items if getattr(lg, "init_args", None) is not None]


def pin_run_dir(config: Any) -> Path | None:
    """Point a subcommand's parsed config (checkpoints, loggers, default_root_dir) at its run directory.

    Runs before the classes are instantiated. Loggers that version their output (CSV, TensorBoard)
    write ``<run_dir>/version_<n>``: a restart adds a version instead of truncating the previous
    ``metrics.csv`` (Lightning's CSV logger empties a reused version directory: ``csv_logs.py``
    ``_check_log_dir_exists``). Returns the run directory, None when there is none.
    """
    loggers = _logger_configs(config.trainer.get("logger"))
    run_dir = config.get("run_dir")
    if run_dir is None:
        first = loggers[0].init_args if loggers else {}
        run_dir = job_run_dir(first.get("save_dir") or "runs", first.get("name") or "lightning_logs")
    if run_dir is None:
        return None
    run_dir = Path(run_dir)
    config.run_dir = str(run_dir)
    config.trainer.default_root_dir = str(run_dir)
    for group in ("checkpoint", "last_checkpoint"):  # the ModelCheckpoint groups of src/cli.py
        if config.get(group) is not None and config[group].get("dirpath") is None:
            config[group].dirpath = str(run_dir / "checkpoints")
    for logger in loggers:
        if "save_dir" in logger.init_args:
            logger.init_args.save_dir = str(run_dir)
        if logger.class_path.rsplit(".", 1)[-1] in ("CSVLogger", "TensorBoardLogger"):
            logger.init_args.name = ""
    return run_dir


def resume_from_run_dir(config: Any, trainer: Trainer) -> Path | None:
    """Set ``ckpt_path`` of a parsed+instantiated ``fit`` config to the run's newest checkpoint, if any.

    An explicit ``--ckpt_path`` wins. Weights-only loading is off: the checkpoint was written by
    this very run (its hparams hold the CLI's class paths, which are not on torch's allowlist).
    """
    if config.get("ckpt_path") is not None or config.get("run_dir") is None:
        return None
    ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None) or Path(config.run_dir) / "checkpoints"
    found = find_resume_checkpoint(ckpt_dir, trainer.default_root_dir)
    if found is not None:
        config.ckpt_path = str(found)
        config.weights_only = False
        rank_zero_info(f"Resuming from {found} (newest checkpoint of run directory {config.run_dir})")
    return found


def fault_plugins(plugins: Any) -> list[Any]:
    """The configured plugins plus atomic checkpoint IO and, inside SLURM, SLURMEnvironment without auto-requeue."""
    items = [] if plugins is None else list(plugins) if isinstance(plugins, list | tuple) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in items):
        items.append(AtomicCheckpointIO())
    if slurm_job_tag() is not None and not any(isinstance(p, ClusterEnvironment) for p in items):
        items.append(SLURMEnvironment(auto_requeue=False))  # Preemption requeues instead (see there)
    return items


def fault_callbacks() -> list[Callback]:
    """Always: NaN/inf stop and RNG state in checkpoints; inside SLURM also preemption handling."""
    callbacks: list[Callback] = [FiniteLoss(), ResumeState()]
    if slurm_job_tag() is not None:
        callbacks.append(Preemption())
    return callbacks


# -- callbacks ------------------------------------------------------------------------------------


class FiniteLoss(Callback):
    """Stop with a FloatingPointError at the first NaN/inf training loss, naming the step.

    On the CPU it is checked before backward, every step, so the bad step never reaches the
    weights. On a GPU reading the loss every step would stall the pipeline (a host sync per
    step), so the first bad step is recorded on the device and read every ``gpu_check_every``
    steps and before every checkpoint save: the run still stops naming the exact step, and no
    checkpoint is ever written from a non-finite state. On a cluster the non-zero exit ends the
    job (srun ``--kill-on-bad-exit``) instead of burning the allocation on NaNs.
    """

    def __init__(self, gpu_check_every: int = 50, defer: bool | None = None) -> None:
        self.gpu_check_every = gpu_check_every
        self.defer = defer  # None: defer on accelerators only
        self._first_bad: torch.Tensor | None = None  # step of the first bad loss, -1 if none

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        if not (self.defer if self.defer is not None else loss.device.type != "cpu"):
            if bad:
                self._raise(trainer, trainer.global_step, f"{loss.item()}", "stopped before the optimizer step")
            return
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        step = torch.full_like(self._first_bad, trainer.global_step)
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)
        if trainer.global_step % self.gpu_check_every == 0:
            self._check(trainer)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if self._first_bad is not None and (step := int(self._first_bad)) >= 0:
            self._raise(trainer, step, "not finite", f"noticed at step {trainer.global_step}")

    def _raise(self, trainer: Trainer, step: int, value: str, when: str) -> None:
        raise FloatingPointError(
            f"training loss is {value} at global step {step} (epoch {trainer.current_epoch}, batch "
            f"{trainer.fit_loop.epoch_loop.batch_idx}); {when}. Lower the lr, add warm-up or check the data; "
            "the last checkpoint holds finite weights from before this step."
        )


class ResumeState(Callback):
    """Keeps the global torch/numpy/python RNG states in checkpoints and reports where a resume starts.

    The default sampler draws each epoch's shuffle seed from the global RNG, so without the saved
    states a run resumed at an epoch boundary would shuffle differently from an uninterrupted one.
    """

    def state_dict(self) -> dict[str, Any]:
        states = _collect_rng_states(include_cuda=torch.cuda.is_available())
        # numpy's state holds an ndarray, which torch.load(weights_only=True) refuses (so would
        # `python -m src.cli test --ckpt_path ...`): store its keys as a tensor instead.
        name, keys, pos, has_gauss, gauss = states["numpy"]
        states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            states = dict(state_dict["rng"])
            name, keys, pos, has_gauss, gauss = states["numpy"]
            states["numpy"] = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss)
            _set_rng_states(states)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path:
            rank_zero_info(
                f"Resumed training at global step {trainer.global_step}, epoch {trainer.current_epoch}"
                f" from {trainer.ckpt_path}"
            )


class Preemption(Callback):
    """On ``signum`` (SIGUSR1, sent by ``sbatch --signal=SIGUSR1@90``): checkpoint, requeue, stop.

    Lightning's own auto-requeue saves from inside the signal handler, at whatever bytecode the
    signal interrupts, and does a collective there; ranks can then hang or save a torn state
    (Lightning-AI/pytorch-lightning#21406). Here the handler only sets a flag; at the next step boundary all ranks
    agree through one all-reduce, save ``last.ckpt`` together, rank 0 runs ``scontrol requeue``, and
    the process leaves (``SIGTERMException``, exit 0). The requeued job (same id, same run directory)
    resumes from that checkpoint.
    """

    def __init__(self, signum: int = signal.SIGUSR1, requeue: bool = True) -> None:
        self.signum = signal.Signals(signum)
        self.requeue = requeue
        self.received = False
        self.preempted = False
        self._previous: Any = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._previous = signal.signal(self.signum, self._on_signal)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received = True  # only a flag: the work happens between steps, on all ranks together

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.preempted or not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        self.preempted = True
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)  # all ranks: Lightning writes on rank 0 and barriers
        rank_zero_info(
            f"Preempted ({self.signum.name}) at global step {trainer.global_step}, epoch {trainer.current_epoch}:"
            f" saved {path}"
        )
        if self.requeue and trainer.is_global_zero:
            self._requeue()
        # Leave now, as a kill would: a normal stop would still run the epoch-end hooks (epoch-interval
        # LR schedulers, checkpoints marking the epoch done) for an epoch the requeued job finishes.
        raise SIGTERMException(0)

    @staticmethod
    def checkpoint_path(trainer: Trainer) -> Path:
        """``last.ckpt`` beside the run's other checkpoints, where auto-resume looks."""
        dirs = [cb.dirpath for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
        return Path(dirs[0] if dirs else os.path.join(trainer.default_root_dir, "checkpoints")) / "last.ckpt"

    @staticmethod
    def _requeue() -> None:
        job = slurm_job_tag()
        if job is None:
            rank_zero_warn("Preempted outside a SLURM job: checkpoint saved, nothing to requeue")
            return
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=120)
        if result.returncode == 0:
            rank_zero_info(f"Requeued SLURM job {job}")
        else:
            rank_zero_warn(f"`scontrol requeue {job}` failed ({result.returncode}): {result.stderr.strip()}")
