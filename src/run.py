"""The run's policy: where it writes (``RunLayout``), whether it resumes, what it checkpoints and tests.

Every writer asks the layout: the CSV logger (``metrics.csv``, ``hparams.yaml``), ``config.yaml``
beside it, the W&B offline directory under it, both checkpoint callbacks, SLURM preemption, auto-resume
and the ImageNet class index (it writes into ``trainer.log_dir``, the CSV logger's directory).

Two shapes:

- **one-off** (the default): ``<root_dir>/<name>/version_<n>/`` holds logs and ``checkpoints/``;
  every call gets a new version, nothing resumes.
- **stable** (``--run_dir``, or any SLURM job: ``<root_dir>/<name>/slurm-<job id>``): checkpoints in
  ``<run dir>/checkpoints``, the logs of each (re)start in ``<run dir>/version_<n>`` (Lightning's CSV
  logger empties a reused version directory, so a restart adds one), and ``fit`` resumes from the newest
  checkpoint there. A requeued SLURM job keeps its id, so it finds its own checkpoints.

``root_dir`` is ``trainer.default_root_dir`` (``runs`` by default) and ``name`` the config's ``name``
(else one derived from the network, e.g. ``r56-full_preact-A``).

Beside the layout: the two always-present checkpoint callbacks (``checkpoint_callbacks``), the
hyperparameters of a ``--ckpt_path`` that go over the config (``checkpoint_model_config``: ``fit``
keeps the config's network, the model's load-time check refuses another one unless
``--allow_net_change``), the plugins every run gets, and the test after ``fit`` (``evaluate_after_fit``).
"""

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from src.checkpoint_io import TMP_SUFFIX, AtomicCheckpointIO, checkpoint_problem
from src.models.checkpoint_fit import net_differences, upgrade_hparams

CHECKPOINTS = ("checkpoint", "last_checkpoint")  # the config groups of the two always-present ModelCheckpoints
CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val/err1",
    "checkpoint.mode": "min",
    "checkpoint.filename": "best-{epoch:03d}-{step:06d}",
    "checkpoint.auto_insert_metric_name": False,
    # Not `checkpoint.save_last`: Lightning 2.6 refreshes that only when a new best was saved, so it
    # goes stale. This one overwrites last.ckpt every epoch (or every_n_train_steps).
    "last_checkpoint.filename": "last",
    "last_checkpoint.monitor": None,
    "last_checkpoint.save_top_k": 1,
    "last_checkpoint.enable_version_counter": False,
}
# Checkpoints saved before these became run options hold them as model hyperparameters.
RUN_OPTIONS_IN_OLD_CHECKPOINTS = ("allow_net_change",)
LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")

RUN_DIR_HELP = (
    "stable run directory: checkpoints go to <run_dir>/checkpoints, logs to <run_dir>/version_<n> (one per"
    " restart), and `fit` resumes from the newest checkpoint there. Default inside a SLURM job:"
    " <trainer.default_root_dir>/<name>/slurm-<job id>, so a requeued job resumes by itself; outside SLURM: unset"
    " (a new <trainer.default_root_dir>/<name>/version_<n> per call, no resume)"
)


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


@dataclass(frozen=True)
class RunLayout:
    root_dir: Path  # trainer.default_root_dir: all runs
    name: str  # the experiment: runs/<name>/...
    run_dir: Path | None = None  # stable, resumable directory; None: a new version per call

    @classmethod
    def resolve(cls, root_dir: str | os.PathLike, name: str, run_dir: str | os.PathLike | None) -> "RunLayout":
        if run_dir is None and (job := slurm_job_tag()) is not None:
            run_dir = Path(root_dir) / name / f"slurm-{job}"
        return cls(Path(root_dir), name, None if run_dir is None else Path(run_dir))

    @property
    def stable(self) -> bool:
        return self.run_dir is not None

    @property
    def root(self) -> Path:
        """The trainer's ``default_root_dir``: the run directory, or the experiment's folder of versions."""
        return self.run_dir if self.run_dir is not None else self.root_dir / self.name

    @property
    def checkpoint_dir(self) -> Path | None:
        """``<run dir>/checkpoints``; None for one-off runs: Lightning's ``<log dir>/checkpoints``, same version."""
        return None if self.run_dir is None else self.run_dir / "checkpoints"

    def csv_logger(self) -> CSVLogger:
        """The first logger: its ``log_dir`` is where config.yaml, metrics.csv and wandb/ go."""
        if self.run_dir is not None:
            return CSVLogger(self.run_dir, name="")  # <run dir>/version_<n>
        return CSVLogger(self.root_dir, name=self.name)  # <root>/<name>/version_<n>

    def resume_candidates(self) -> list[Path]:
        """Checkpoints a stable run may resume from, newest first; empty for one-off runs.

        Every ``<checkpoint_dir>/*.ckpt`` (``last``, then ``best-*`` as fallbacks) and Lightning's
        ``<run dir>/hpc_ckpt_*.ckpt``: whichever was written most recently holds the latest step.
        Lightning resumes from hpc checkpoints only when ``ckpt_path`` is unset and from ``last`` only
        when it is ``"last"`` (Lightning's ``_CheckpointConnector._parse_ckpt_path``), so the CLI picks
        one itself. Unfinished ``*.ckpt.tmp`` files from a kill during a save never match.
        """
        if self.run_dir is None or self.checkpoint_dir is None:
            return []
        found = [*self.checkpoint_dir.glob("*.ckpt"), *self.run_dir.glob("hpc_ckpt_*.ckpt")]
        return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)

    def resume_from(self) -> Path | None:
        """The checkpoint a stable run's ``fit`` resumes from: the newest readable one; None for a fresh start.

        ``*.tmp`` files left by a save that failed (disk full, a kill) are removed first. A truncated,
        empty or foreign checkpoint becomes ``<name>.corrupt`` (rank 0) and the next newest is tried. If
        the run directory held checkpoints and none is readable, it stops rather than silently start
        again at step 0.
        """
        if self.checkpoint_dir is None:
            return None
        if getattr(rank_zero_only, "rank", 0) == 0:
            for tmp in self.checkpoint_dir.glob(f"*{TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
                rank_zero_info(f"Removed {tmp}, left by a save that did not finish")
        skipped = []
        for candidate in self.resume_candidates():
            problem = checkpoint_problem(candidate)
            if problem is None:
                rank_zero_info(f"Resuming from {candidate} (newest checkpoint of run directory {self.run_dir})")
                return candidate
            skipped.append(f"{candidate.name} ({problem})")
            if getattr(rank_zero_only, "rank", 0) == 0:
                aside = candidate.with_name(candidate.name + ".corrupt")
                candidate.replace(aside)
                rank_zero_warn(f"cannot resume from {candidate}: {problem}; moved it to {aside.name}")
        corrupt = sorted(p.name for p in self.checkpoint_dir.glob("*.corrupt"))
        if skipped or corrupt:
            raise ValueError(
                f"run directory {self.run_dir} holds no readable checkpoint ({', '.join(skipped or corrupt)}); "
                "it will not silently start again at step 0. Pass --ckpt_path, or start a new --run_dir"
            )
        return None

    def checkpoint_callbacks(self, configs: dict[str, Any]) -> list[ModelCheckpoint]:
        """The best checkpoint by validation error and ``last.ckpt``, in the layout's checkpoint directory."""
        made = []
        for group in CHECKPOINTS:
            args = configs[group].as_dict()
            made.append(ModelCheckpoint(**{**args, "dirpath": args["dirpath"] or self.checkpoint_dir}))
        return made


def checkpoint_model_config(subcommand: str, path: str, config_net: Any) -> dict[str, Any]:
    """The model hyperparameters of ``--ckpt_path`` that LightningCLI puts over the config's (``{}``: none).

    ``fit`` keeps the config's network: the model's load-time check (``check_checkpoint_fits``) refuses a
    checkpoint of another one unless ``--allow_net_change``. ``test``/``validate``/``predict`` evaluate the
    checkpoint's network, and say so when the config asked for another. Run options that old checkpoints
    saved as hyperparameters are dropped. Weights-only: a file that is no plain checkpoint is refused.
    """
    if path in LIGHTNING_CKPT_KEYWORDS:
        return {}
    if (problem := checkpoint_problem(path)) is not None:
        raise ValueError(f"--ckpt_path {path}: {problem}")
    hparams = dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {}))
    for key in ("_instantiator", *RUN_OPTIONS_IN_OLD_CHECKPOINTS):
        hparams.pop(key, None)
    upgrade_hparams(hparams)  # older checkpoints' network arguments in today's names
    if subcommand == "fit":
        hparams.pop("net", None)
    elif differ := net_differences(hparams, config_net):
        rank_zero_info(f"{subcommand}: using the network of {path}, not the config's: {'; '.join(differ)}")
    if "_class_path" in hparams:  # a model given by class path (LightningCLI's own handling)
        return {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
    return hparams


def without_old_run_options(args: list[str]) -> list[str]:
    """The command line, with each ``-c`` file saved by a run from before ``allow_net_change`` became a run
    option (its ``config.yaml`` holds ``model.allow_net_change``) passed as its YAML text without that key:
    ``test -c <old run>/config.yaml --ckpt_path ...`` keeps working."""
    out = list(args)
    for i, (flag, value) in enumerate(itertools.pairwise(args)):
        if flag in ("-c", "--config") and Path(value).is_file():
            content = yaml.safe_load(Path(value).read_text())
            model = content.get("model") if isinstance(content, dict) else None
            if isinstance(model, dict) and any(key in model for key in RUN_OPTIONS_IN_OLD_CHECKPOINTS):
                for key in RUN_OPTIONS_IN_OLD_CHECKPOINTS:
                    model.pop(key, None)
                out[i + 1] = yaml.safe_dump(content, sort_keys=False)
    return out


def plugins(configured: Any) -> list[Any]:
    """The configured plugins plus atomic checkpoint IO and, inside SLURM, SLURMEnvironment without auto-requeue."""
    items = [] if configured is None else list(configured) if isinstance(configured, list | tuple) else [configured]
    if not any(isinstance(p, CheckpointIO) for p in items):
        items.append(AtomicCheckpointIO())
    if slurm_job_tag() is not None and not any(isinstance(p, ClusterEnvironment) for p in items):
        items.append(SLURMEnvironment(auto_requeue=False))  # src.preemption requeues instead (see there)
    return items


def evaluate_after_fit(trainer: Trainer, model: LightningModule, data: LightningDataModule) -> None:
    """Tests the best checkpoint on the test split and prints the result (the last one where the
    DataModule validates on its test split: a "best" chosen there would leak)."""
    if getattr(trainer, "fast_dev_run", False):
        return
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") or None
    if best and getattr(data, "val_is_test", False):
        best = None
    trainer.test(model, datamodule=data, ckpt_path=best or "last", weights_only=False)
    metrics = trainer.callback_metrics
    if "test/acc1" in metrics:
        which = f"the best checkpoint {best}" if best else "the last checkpoint"
        rank_zero_info(
            f"\nTest top-1 accuracy {metrics['test/acc1']:.2f}% (error {metrics['test/err1']:.2f}%) "
            f"of {which}\nrun directory: {trainer.log_dir}"
        )
