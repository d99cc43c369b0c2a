"""Run logging: W&B beside a CSV file, run names from the config, and the facts a comparison needs.

- ``WandbOptions`` is the CLI's ``wandb:`` group (project, entity, group, tags, mode, ...).
- ``mode: auto`` (the default) runs online when a W&B API key is found (``WANDB_API_KEY`` or the
  ``~/.netrc`` entry ``wandb login`` writes) and offline otherwise; ``WANDB_MODE`` always wins.
  Offline runs land in ``<run dir>/wandb/offline-run-*``; upload them later with ``wandb sync``.
- ``init_wandb`` falls back to offline if ``wandb.init`` fails online (no network, bad key,
  server down), so a run never crashes because W&B is unreachable.
- ``run_loggers`` puts the W&B logger *after* the run layout's CSV logger (``src/run.py``):
  ``metrics.csv`` and ``hparams.yaml`` are always written, which is what ``scripts/report.py``
  reads, and the CSV logger's directory is the run's log directory (``config.yaml``, ``wandb/``).
- ``RunFacts`` logs, once per run, git commit/dirty, parameters, GMACs, hardware, precision and
  the software environment (``src.environment.facts``: Python/torch/CUDA/cuDNN versions, lock and
  package digests) as hyperparameters, and per epoch the wall time and training images per second.
"""

import contextlib
import netrc
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import nn

from src import environment
from src.choices import check_choices
from src.models.profile import count_macs, count_params
from src.provenance import cpu_name, git_state

REPO = Path(__file__).resolve().parents[1]
Mode = Literal["auto", "online", "offline", "disabled"]


@dataclass
class WandbOptions:
    """The ``wandb:`` config group. ``name`` defaults to the network's name, e.g. ``r56-full_preact``."""

    mode: Mode = "auto"
    project: str = "resnet-template"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    name: str | None = None
    notes: str | None = None
    log_model: bool | Literal["all"] = False  # upload checkpoints as artifacts (online only)
    init_timeout: float = 60.0  # seconds wandb.init may wait for the server before we fall back to offline


def describe_net(net: nn.Module) -> dict[str, Any]:
    """The network's own facts (``ResNet.describe()``: name, depth, block, ...); other modules give their class name."""
    describe = getattr(net, "describe", None)
    return describe() if callable(describe) else {"name": type(net).__name__.lower()}


def run_name(net: nn.Module) -> str:
    """``r56``, ``plain20``, ``r110-full_preact-B``: ``ResNet.name``; the class name for other modules."""
    return str(describe_net(net)["name"])


def has_api_key() -> bool:
    """True when wandb would find credentials without prompting: the env var or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: Mode) -> str:
    """The wandb mode a run will use; ``WANDB_MODE`` in the environment overrides the config."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    check_choices(resolve_mode, {"mode": mode})
    if mode == "auto":
        return "online" if has_api_key() else "offline"
    return mode


def init_wandb(**kwargs: Any) -> Any:
    """``wandb.init(**kwargs)``; when it fails online (no network, bad key, server down), offline instead.

    Done here rather than lazily inside WandbLogger, so that a run never crashes because W&B is
    unreachable and the fallback needs no access to the logger's private init arguments.
    """
    import wandb

    try:
        run = wandb.init(**kwargs)
    except Exception as err:  # wandb raises CommError, UsageError, TimeoutError... depending on the failure
        if kwargs.get("mode") != "online":
            raise
        # A half-started run would be reused by the next init, and the service that failed it can
        # time out or drop the offline run's config: start afresh, as wandb's maintainers advise
        # (wandb/wandb#8003, #9865).
        wandb.finish()
        wandb.teardown()
        rank_zero_warn(
            f"wandb.init failed online ({type(err).__name__}: {err}); logging offline instead. "
            f"Upload later with `wandb sync {kwargs.get('dir')}/wandb/offline-run-*`."
        )
        run = wandb.init(**{**kwargs, "mode": "offline"})
    # What WandbLogger does for the runs it starts itself: plot every metric against the trainer's step.
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return run


def run_loggers(csv: CSVLogger, configured: Any, options: WandbOptions, name: str) -> list[Logger] | bool:
    """A run's loggers: the layout's CSV logger first, the configured ones, then W&B unless disabled.

    ``trainer.logger: false`` turns all of them off. The CSV logger comes first, so ``metrics.csv`` and
    ``hparams.yaml`` (what ``scripts/report.py`` reads) are always written and its directory is the one
    ``config.yaml``, ``trainer.log_dir`` and the W&B offline files share.
    """
    if configured is False:
        return False
    extra = [] if configured in (None, True) else configured if isinstance(configured, list | tuple) else [configured]
    loggers: list[Logger] = [csv, *extra]
    mode = resolve_mode(options.mode)
    if mode == "disabled":
        return loggers
    log_model = options.log_model
    if mode == "offline" and log_model:
        rank_zero_warn(f"wandb.log_model={log_model!r} needs online mode; checkpoints stay on disk only")
        log_model = False
    import wandb

    init: dict[str, Any] = {
        "name": options.name or name,
        "dir": str(csv.log_dir),  # inside the run directory, so everything a run produces sits in one place
        "project": options.project,
        "entity": options.entity,
        "group": options.group,
        "tags": list(options.tags) or None,
        "notes": options.notes,
        "mode": mode,
        # wandb looks for git in its dir, which does not exist yet: point it at this checkout.
        "settings": wandb.Settings(
            init_timeout=options.init_timeout, git_root=str(REPO) if (REPO / ".git").exists() else None
        ),
    }
    experiment = None
    if getattr(rank_zero_only, "rank", 0) == 0:  # other ranks never log; their WandbLogger stays unstarted
        # The CSV logger makes its directory first: finding wandb/ already in it, it would warn that
        # "previous log files" will be deleted.
        _ = csv.experiment
        experiment = init_wandb(**init)
    save_dir = init.pop("dir")
    return [*loggers, WandbLogger(experiment=experiment, save_dir=save_dir, log_model=log_model, **init)]


class WandbSaveConfigCallback(SaveConfigCallback):
    """Writes ``config.yaml`` as usual and also puts the resolved config into each W&B run's config."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"cli": self.config.as_dict()}, allow_val_change=True)


def hardware(trainer: Trainer) -> dict[str, Any]:
    root = trainer.strategy.root_device
    device = torch.cuda.get_device_name(root) if root.type == "cuda" else cpu_name()
    return {
        "hw/accelerator": root.type,
        "hw/device": device,
        "hw/world_size": trainer.world_size,
        "hw/num_nodes": trainer.num_nodes,
        "hw/cpus": os.cpu_count(),
        "hw/precision": str(trainer.precision),
        "hw/strategy": type(trainer.strategy).__name__,
    }


class RunFacts(Callback):
    """Logs what a comparison needs beside the metrics.

    Once, at the first batch (whose shape gives the input size for the FLOP count): run name,
    group and tags, git commit/dirty, model params/GMACs/depth/unit/shortcut, hardware, precision, and
    the environment: ``versions/{python,torch,cuda,cudnn,lightning}``, ``env/lock`` (digest of the lock
    files), ``env/packages`` (digest of the installed packages the project runs on) and ``env/off_lock``.
    Every training epoch: ``perf/epoch_s`` (wall time of the epoch including its validation) and
    ``perf/images_per_s`` (training images over the time from epoch start to the last training batch,
    summed over all processes).
    """

    def __init__(self, name: str, group: str | None = None, tags: list[str] | None = None) -> None:
        self.facts: dict[str, Any] = {"run/name": name, "run/group": group, "run/tags": list(tags or [])}
        self.logged = False
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._images = 0

    def _log_facts(self, trainer: Trainer, pl_module: LightningModule, batch: Any) -> None:
        if self.logged:
            return
        self.logged = True
        if not trainer.is_global_zero:
            return
        facts = dict(self.facts)
        net = getattr(pl_module, "net", pl_module)
        facts["model/params"] = count_params(net)
        x = batch[0] if isinstance(batch, list | tuple) else batch
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            facts["model/input"] = "x".join(map(str, x.shape[1:]))
            facts["model/GMACs"] = count_macs(net, tuple(x.shape[1:])) / 1e9
        described = describe_net(net)
        for key in ("name", "depth", "block", "stages", "unit", "shortcut"):
            facts[f"model/{key}"] = described.get(key)
        facts.update(git_state())
        facts.update(hardware(trainer))
        facts.update(environment.facts())
        for logger in trainer.loggers:
            logger.log_hyperparams(facts)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._log_facts(trainer, pl_module, batch)

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._log_facts(trainer, pl_module, batch)

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._log_facts(trainer, pl_module, batch)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A resume mid-epoch gets no on_train_epoch_start for that epoch: time it from here.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._images = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        self._images += len(x)
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._images:  # an epoch a resume re-entered after its last batch: nothing was timed
            return
        now = time.perf_counter()
        train_s = self._last_batch_end - self._epoch_start
        # Every rank sees the same number of batches, so the global rate is world_size times ours.
        rate = self._images * trainer.world_size / train_s if train_s > 0 else float("nan")
        pl_module.log("perf/epoch_s", now - self._epoch_start, rank_zero_only=True)
        pl_module.log("perf/images_per_s", rate, rank_zero_only=True)


@contextlib.contextmanager
def closing_wandb() -> Iterator[None]:
    """Finishes the W&B run on the way out, whatever happens: before a requeue's SIGTERM can reach W&B's
    service process, before an error's one line (so that it is the last line), and so that the next run
    in this process (tests, notebooks) starts a new one. Fit and its test share one W&B run."""
    try:
        yield
    finally:
        finish_wandb()


@rank_zero_only
def finish_wandb() -> None:
    """Closes the W&B run, so a second run in the same process (tests, notebooks) starts a new one."""
    import wandb

    if wandb.run is not None:
        wandb.finish()
