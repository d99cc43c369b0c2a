"""Entry point: ``python -m src.cli {fit,validate,test,predict} -c configs/<experiment>.yaml``.

Several ``-c`` files compose left to right (later wins); any key can be overridden on
the command line (``--model.lr 0.05``); ``--print_config`` shows the merged result.
This module only composes: where a run writes, whether it resumes, what it checkpoints and tests is
``src/run.py``; bad input ends in ``src/bad_input.py``'s funnel (one line, exit 2); preemption is
``src/preemption.py``. By default ``runs/<name>/version_<n>/`` holds ``config.yaml``, ``metrics.csv``
and ``checkpoints/{best-*,last}.ckpt``; with ``--run_dir`` (and in every SLURM job) checkpoints go to
``<run dir>/checkpoints``, each restart's logs to ``<run dir>/version_<n>``, and ``fit`` resumes.
"""

import signal
import sys

if __name__ == "__main__" and sys.argv[1:2] == ["fit"]:
    # Before the imports below: on a loaded node they take tens of seconds, and Slurm's SIGUSR1 arriving
    # meanwhile would kill the process (its default action), and the job with it, without a requeue.
    # Blocked, it stays pending until src.preemption's handler takes it (main).
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGUSR1, signal.SIGTERM))

from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from src.bad_input import PARSER_KWARGS, StartGuard, check_config_files, check_trains, funnel
from src.callbacks import FiniteLoss, ResumeState
from src.loggers import RunFacts, WandbOptions, WandbSaveConfigCallback, closing_wandb, run_loggers, run_name
from src.models.classifier import ImageClassifier
from src.preemption import Preemption, exits, ignore_late_warnings
from src.progress import TextProgress, example_input, quiet_first_screen
from src.run import (
    CHECKPOINT_DEFAULTS,
    CHECKPOINTS,
    RUN_DIR_HELP,
    RunLayout,
    checkpoint_model_config,
    evaluate_after_fit,
    plugins,
    slurm_job_tag,
    without_old_run_options,
)


class ResNetCLI(LightningCLI):
    layout: RunLayout  # set when the trainer is made; everything that writes asks it where

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Always present (a config's own `trainer.callbacks` list cannot drop them): the best checkpoint
        # by validation error, and `last.ckpt` for resuming. Not instantiated by the parser: their
        # directory comes from the run layout (instantiate_trainer).
        for group in CHECKPOINTS:
            parser.add_class_arguments(ModelCheckpoint, group, instantiate=False)
        parser.set_defaults(CHECKPOINT_DEFAULTS)
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
        parser.add_argument(
            "--allow_net_change",
            type=bool,
            default=False,
            help="load a checkpoint into a network whose arguments differ from the checkpoint's (fine-tuning on"
            " purpose); without it such a load is refused, naming the arguments",
        )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI's own step (a private hook): the checkpoint's hyperparameters go over the config.
        # Which of them is the run's policy (src/run.py); checkpoints are read here, never in the parser.
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path is None:
            return
        hparams = checkpoint_model_config(subcommand, path, self.config[subcommand].model.get("net"))
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            check_trains(self.config.fit.trainer)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        # A run decision, not a hyperparameter: read by the model's load-time check, never saved with it.
        self.model.allow_net_change = bool(self.config_value("allow_net_change"))
        self.model.example_input_array = example_input(self.datamodule, self.model)  # the summary's FLOPs

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
            callbacks += layout.checkpoint_callbacks(config)
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
        if config.get("ckpt_path") is None and (found := self.layout.resume_from()) is not None:
            config["ckpt_path"], config["weights_only"] = str(found), False

    def after_fit(self) -> None:
        # Here and not in a callback: a Trainer cannot start `test` from inside its own `fit` hooks.
        if self.config_value("test_after_fit"):
            evaluate_after_fit(self.trainer, self.model, self.datamodule)

    def config_value(self, key: str) -> Any:
        """``key`` of the parsed config (plain values), of the running subcommand."""
        return self._of_subcommand(self.config).get(key)

    def _of_subcommand(self, config: Any) -> Any:
        return config[self.subcommand] if self.subcommand else config


def main(args: list[str] | None = None) -> ResNetCLI:
    torch.set_float32_matmul_precision("high")  # TF32 on Ampere+ GPUs; no effect on CPU
    quiet_first_screen()
    argv = sys.argv[1:] if args is None else args
    guard = StartGuard()  # whether any loop reached its first batch; what a failed start created
    # Inside out: W&B closes first, so that a requeue cannot kill its service and an error's line comes last.
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
            args=without_old_run_options(argv),
        )


if __name__ == "__main__":
    try:
        main()
    finally:
        ignore_late_warnings()
