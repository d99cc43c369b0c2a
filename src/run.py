"""Where a run writes, decided once: ``RunLayout``.

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
"""

import os
from dataclasses import dataclass
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import CSVLogger

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
