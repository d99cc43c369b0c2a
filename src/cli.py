"""Entry point: ``python -m src.cli {fit,validate,test,predict} -c configs/<experiment>.yaml``.

Several ``-c`` files compose left to right (later wins); any key can be overridden on
the command line (``--model.lr 0.05``); ``--print_config`` shows the merged result.
Where a run writes is ``src/run.py``'s ``RunLayout``: by default ``runs/<name>/version_<n>/`` holds
``config.yaml``, ``metrics.csv`` and ``checkpoints/{best-*,last}.ckpt``; with ``--run_dir`` (and in
every SLURM job) checkpoints go to ``<run dir>/checkpoints`` and each restart's logs to
``<run dir>/version_<n>``, and ``fit`` resumes from the newest checkpoint there.
"""

import signal
import sys

if __name__ == "__main__" and sys.argv[1:2] == ["fit"]:
    # Before the imports below: on a loaded node they take tens of seconds, and Slurm's SIGUSR1 arriving
    # meanwhile would kill the process (its default action), and the job with it, without a requeue.
    # Blocked, it stays pending until src.preemption's handler takes it (main).
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGUSR1, signal.SIGTERM))

import copy
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from src.bad_input import PARSER_KWARGS, StartGuard, check_config_files, check_trains, funnel
from src.callbacks import FiniteLoss, ResumeState
from src.checkpoint_io import TMP_SUFFIX, AtomicCheckpointIO, checkpoint_problem
from src.loggers import RunFacts, WandbOptions, WandbSaveConfigCallback, closing_wandb, run_loggers, run_name
from src.models.checkpoint_fit import net_differences
from src.models.classifier import ImageClassifier
from src.preemption import Preemption, exits, ignore_late_warnings
from src.progress import TextProgress
from src.run import RUN_DIR_HELP, RunLayout, slurm_job_tag

CHECKPOINTS = ("checkpoint", "last_checkpoint")  # the config groups of the two always-present ModelCheckpoints


class ResNetCLI(LightningCLI):
    layout: RunLayout  # set when the trainer is made; everything that writes asks it where

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Always present (a config's own `trainer.callbacks` list cannot drop them): the best checkpoint
        # by validation error, and `last.ckpt` for resuming. Not instantiated by the parser: their
        # directory comes from the run layout (instantiate_trainer).
        for group in CHECKPOINTS:
            parser.add_class_arguments(ModelCheckpoint, group, instantiate=False)
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/err1",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best-{epoch:03d}-{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
                # Not `checkpoint.save_last`: Lightning 2.6 refreshes that only when a new best was saved,
                # so it goes stale. This one overwrites last.ckpt every epoch (or every_n_train_steps).
                "last_checkpoint.filename": "last",
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.enable_version_counter": False,
            }
        )
        # The dataset decides the classifier's input channels and classes: one source of truth.
        parser.link_arguments("data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.net.init_args.in_channels", apply_on="instantiate")
        # W&B beside the CSV logger: project, entity, group, tags, mode (auto = offline without a login).
        parser.add_class_arguments(WandbOptions, "wandb")
        parser.add_argument(
            "--name",
            type=str | None,
            default=None,
            help="experiment name: runs land in <trainer.default_root_dir>/<name>/ (default: from the network,"
            " e.g. r56-full_preact-A)",
        )
        parser.add_argument("--run_dir", type=str | None, default=None, help=RUN_DIR_HELP)
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after `fit`, test the best checkpoint on the test split and print the result",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Before LightningCLI reads the checkpoint's hyperparameters (a text file there gives "KeyError: 101").
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        keyword = path in ("last", "best", "hpc", "registry")  # Lightning's own values
        if path is not None and not keyword and (problem := checkpoint_problem(path)) is not None:
            raise ValueError(f"--ckpt_path {path}: {problem}")
        if path is not None and not keyword and Path(path).is_file():
            self._check_checkpoint_network(parser, subcommand, path)

    def _check_checkpoint_network(self, parser: LightningArgumentParser, subcommand: str, path: str) -> None:
        """LightningCLI builds the model from the checkpoint's hyperparameters, over the config's: say so.

        For ``fit`` a config that asks for another network is refused (naming the arguments), unless
        ``--model.allow_net_change true``; ``test``/``validate``/``predict`` evaluate the checkpoint's
        network and print that they do.
        """
        hparams = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
        differ = net_differences(hparams, self.config[subcommand].model.get("net"))
        if not differ:
            return
        listed = "\n  ".join(differ)
        if subcommand == "fit" and self.config[subcommand].model.get("allow_net_change"):
            # LightningCLI would put the checkpoint's network over the config's: keep the config's.
            self._config_net = copy.deepcopy(self.config[subcommand].model.net)
            return
        if subcommand == "fit":
            raise ValueError(
                f"--ckpt_path {path} holds another network than the config asks for:\n  {listed}\n"
                "Drop those settings to continue the checkpoint's network, or pass --model.allow_net_change true "
                "to load its weights into the config's network (fine-tuning)"
            )
        rank_zero_info(f"{subcommand}: using the network of {path}, not the config's:\n  {listed}")

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            check_trains(self.config.fit.trainer)
        if getattr(self, "_config_net", None) is not None:
            self.config[self.subcommand].model.net = self._config_net

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with the loggers, checkpoints and run callbacks the run layout decides."""
        config = self._of_subcommand(self.config_init)
        trainer = config["trainer"]
        net_name = run_name(self.model.net)
        layout = RunLayout.resolve(trainer["default_root_dir"], config["name"] or net_name, config["run_dir"])
        self.layout = layout
        csv = layout.csv_logger()
        guard = next(c for c in self.trainer_defaults["callbacks"] if isinstance(c, StartGuard))
        guard.claim(layout.root, csv.log_dir, [layout.root_dir, layout.root_dir / layout.name, layout.root])
        wandb: WandbOptions = config["wandb"]
        name = wandb.name or net_name
        callbacks = list(trainer.get("callbacks") or [])
        if trainer.get("enable_checkpointing") is not False:
            for group in CHECKPOINTS:
                args = config[group].as_dict()
                callbacks.append(ModelCheckpoint(**{**args, "dirpath": args["dirpath"] or layout.checkpoint_dir}))
        # Rich's bar on a terminal, whole lines in a log file (SLURM's .out), unless the config disables
        # bars or brings its own.
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RichProgressBar() if sys.stdout.isatty() else TextProgress())
        callbacks.append(RunFacts(name, wandb.group, wandb.tags))
        # SIGUSR1/SIGTERM: checkpoint at the next step, requeue inside SLURM, exit (143 after SIGTERM).
        slurm = slurm_job_tag() is not None
        callbacks.append(Preemption(requeue=slurm, checkpoint_dir=layout.checkpoint_dir, resumable=layout.stable))
        kwargs = {
            "default_root_dir": str(layout.root),
            "logger": run_loggers(csv, trainer.get("logger"), wandb, name),
            "callbacks": callbacks,
            "plugins": plugins(trainer.get("plugins")),
            **kwargs,
        }
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        # A stable run directory resumes from its newest readable checkpoint; an explicit --ckpt_path wins.
        # Weights-only loading is off: the checkpoint was written by this very run (its hparams hold
        # the CLI's class paths, which are not on torch's allowlist).
        config = self.config_init["fit"]
        if config.get("ckpt_path") is not None:
            return
        remove_stale_tmp(self.layout)
        if (found := resume_checkpoint(self.layout)) is not None:
            config["ckpt_path"], config["weights_only"] = str(found), False
            rank_zero_info(f"Resuming from {found} (newest checkpoint of run directory {self.layout.run_dir})")

    def after_fit(self) -> None:
        # Here and not in a callback: a Trainer cannot start `test` from inside its own `fit` hooks.
        if not self.config_value("test_after_fit") or getattr(self.trainer, "fast_dev_run", False):
            return
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") or None
        data = self.datamodule
        if best and getattr(data, "val_is_test", False):
            # The DataModule validates on its test split (e.g. ImageNet with val_size: 0): "best" was
            # chosen on the test set, so report the last checkpoint instead.
            best = None
        self.trainer.test(self.model, datamodule=data, ckpt_path=best or "last", weights_only=False)
        metrics = self.trainer.callback_metrics
        if "test/acc1" in metrics:
            which = f"the best checkpoint {best}" if best else "the last checkpoint"
            rank_zero_info(
                f"\nTest top-1 accuracy {metrics['test/acc1']:.2f}% (error {metrics['test/err1']:.2f}%) "
                f"of {which}\nrun directory: {self.trainer.log_dir}"
            )

    def config_value(self, key: str) -> Any:
        """``key`` of the parsed config (plain values), of the running subcommand."""
        return self._of_subcommand(self.config).get(key)

    def _of_subcommand(self, config: Any) -> Any:
        return config[self.subcommand] if self.subcommand else config


@rank_zero_only
def remove_stale_tmp(layout: RunLayout) -> None:
    """``*.tmp`` files left by a save that failed (disk full, a kill) in a stable run directory: removed."""
    if layout.checkpoint_dir is None:
        return
    for tmp in layout.checkpoint_dir.glob(f"*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        rank_zero_info(f"Removed {tmp}, left by a save that did not finish")


def resume_checkpoint(layout: RunLayout) -> Path | None:
    """The newest readable checkpoint of a stable run; unreadable ones are named and moved aside.

    A truncated, empty or foreign file becomes ``<name>.corrupt`` (rank 0) and the next newest is
    tried. If the run directory held checkpoints and none is readable, it stops rather than silently
    start again at step 0.
    """
    skipped = []
    for candidate in layout.resume_candidates():
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate
        skipped.append(f"{candidate.name} ({problem})")
        if getattr(rank_zero_only, "rank", 0) == 0:
            aside = candidate.with_name(candidate.name + ".corrupt")
            candidate.replace(aside)
            rank_zero_warn(f"cannot resume from {candidate}: {problem}; moved it to {aside.name}")
    corrupt = sorted(p.name for p in layout.checkpoint_dir.glob("*.corrupt")) if layout.checkpoint_dir else []
    if skipped or corrupt:
        raise ValueError(
            f"run directory {layout.run_dir} holds no readable checkpoint ({', '.join(skipped or corrupt)}); "
            "it will not silently start again at step 0. Pass --ckpt_path, or start a new --run_dir"
        )
    return None


def plugins(configured: Any) -> list[Any]:
    """The configured plugins plus atomic checkpoint IO and, inside SLURM, SLURMEnvironment without auto-requeue."""
    items = [] if configured is None else list(configured) if isinstance(configured, list | tuple) else [configured]
    if not any(isinstance(p, CheckpointIO) for p in items):
        items.append(AtomicCheckpointIO())
    if slurm_job_tag() is not None and not any(isinstance(p, ClusterEnvironment) for p in items):
        items.append(SLURMEnvironment(auto_requeue=False))  # Preemption requeues instead (see there)
    return items


def main(args: list[str] | None = None) -> ResNetCLI:
    torch.set_float32_matmul_precision("high")  # TF32 on Ampere+ GPUs; no effect on CPU
    argv = sys.argv[1:] if args is None else args
    guard = StartGuard()  # whether any loop reached its first batch; cleans up a start that failed before
    with funnel(guard), exits(fit=argv[:1] == ["fit"]), closing_wandb():
        check_config_files(argv)
        return ResNetCLI(
            ImageClassifier,
            LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=WandbSaveConfigCallback,  # config.yaml, and the same config into W&B
            save_config_kwargs={"overwrite": True},  # a requeued job rewrites its own config
            parser_kwargs=PARSER_KWARGS,  # parse errors raise, into the funnel
            trainer_defaults={
                "default_root_dir": "runs",  # all runs: <default_root_dir>/<name>/... (src/run.py)
                # Persistent callbacks, on in every run whatever `trainer.callbacks` says: the lr per step,
                # the NaN/inf stop, and the RNG states that make a resume replay the same shuffles.
                "callbacks": [LearningRateMonitor(logging_interval="step"), FiniteLoss(), ResumeState(), guard],
            },
            args=args,
        )


if __name__ == "__main__":
    try:
        main()
    finally:
        ignore_late_warnings()
