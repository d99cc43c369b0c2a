"""Entry point: ``python -m src.cli {fit,validate,test,predict} -c configs/<experiment>.yaml``.

Several ``-c`` files compose left to right (later wins); any key can be overridden on
the command line (``--model.lr 0.05``); ``--print_config`` shows the merged result.
Everything a run writes lands in ``runs/<name>/version_<n>/``: ``config.yaml``,
``metrics.csv`` and ``checkpoints/{best-*,last}.ckpt``.
"""

from typing import Any

import torch
from jsonargparse import lazy_instance
from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from src.fault import RUN_DIR_HELP, fault_callbacks, fault_plugins, pin_run_dir, resume_from_run_dir
from src.loggers import RunFacts, WandbOptions, WandbSaveConfigCallback, finish_wandb, run_name, with_wandb
from src.models.classifier import ImageClassifier


class ResNetCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Always present (a config's own `trainer.callbacks` list cannot drop them):
        # the best checkpoint by validation error, and `last.ckpt` for resuming.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
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
        parser.add_argument("--run_dir", type=str | None, default=None, help=RUN_DIR_HELP)
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after `fit`, test the best checkpoint on the test split and print the result",
        )

    def instantiate_classes(self) -> None:
        # A constructor's ValueError (depths vs widths, a 6n+2 depth, ...) or a missing dataset is a
        # config error: report it like a parse error, with exit code 2 and no traceback, before any
        # training. jsonargparse wraps it in a Union report (each subtype's failure, the whole
        # Namespace); the constructor's own message is the innermost exception of the chain.
        try:
            super().instantiate_classes()
        except (ValueError, OSError) as e:
            cause: BaseException = e
            while (inner := cause.__cause__ or cause.__context__) is not None:
                cause = inner
            hint = ""
            if isinstance(cause, FileNotFoundError):
                hint = "\n(no dataset at hand? add -c configs/data/synthetic.yaml to train on random data of its shape)"
            self.parser.error(f"invalid configuration: {cause}{hint}")

    def before_instantiate_classes(self) -> None:
        # A stable run directory (explicit, or the SLURM job's) for checkpoints and logs.
        pin_run_dir(self._of_subcommand(self.config))

    def before_fit(self) -> None:
        resume_from_run_dir(self.config_init["fit"], self.trainer)  # no-op without a run dir or checkpoint

    def after_fit(self) -> None:
        if not self.config_value("test_after_fit") or getattr(self.trainer, "fast_dev_run", False):
            return
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") or None
        data = self.datamodule
        if best and getattr(data, "val_is_test", False):
            # val_size: 0 validates on the test split; "best" was chosen on it, so report the last.
            best = None
        self.trainer.test(self.model, datamodule=data, ckpt_path=best or "last", weights_only=False)
        metrics = self.trainer.callback_metrics
        if "test/acc1" in metrics:
            which = f"the best checkpoint {best}" if best else "the last checkpoint"
            rank_zero_info(
                f"\nTest top-1 accuracy {metrics['test/acc1']:.2f}% (error {metrics['test/err1']:.2f}%) "
                f"of {which}\nrun directory: {self.trainer.log_dir}"
            )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        if config.get("enable_checkpointing") is False:  # the always-present checkpoint groups step aside
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        # Rich progress bar by default, unless the config disables bars or brings its own.
        given = list(callbacks) + list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, RichProgressBar()]
        wandb = self._config_init_value("wandb")
        name = wandb.name or run_name(self.model.net)
        config["logger"] = with_wandb(config.get("logger"), wandb, name)
        callbacks = [*callbacks, RunFacts(name, wandb.group, wandb.tags)]
        callbacks = [*callbacks, *fault_callbacks()]  # NaN stop, RNG state, SLURM preemption
        config["plugins"] = fault_plugins(config.get("plugins"))  # atomic checkpoint writes
        return super()._instantiate_trainer(config, callbacks)

    def _config_init_value(self, key: str) -> Any:
        """``key`` of the instantiated config (objects), of the running subcommand."""
        return self._of_subcommand(self.config_init).get(key)

    def config_value(self, key: str) -> Any:
        """``key`` of the parsed config (plain values), of the running subcommand."""
        return self._of_subcommand(self.config).get(key)

    def _of_subcommand(self, config: Any) -> Any:
        return config[self.subcommand] if self.subcommand else config


def main(args: list[str] | None = None) -> ResNetCLI:
    torch.set_float32_matmul_precision("high")  # TF32 on Ampere+ GPUs; no effect on CPU
    try:
        return ResNetCLI(
            ImageClassifier,
            LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=WandbSaveConfigCallback,  # config.yaml, and the same config into W&B
            save_config_kwargs={"overwrite": True},  # a requeued job rewrites its own config
            trainer_defaults={
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
                "callbacks": [lazy_instance(LearningRateMonitor, logging_interval="step")],
            },
            args=args,
        )
    finally:
        finish_wandb()  # fit and its test share one W&B run; the next main() in this process starts a new one


if __name__ == "__main__":
    main()
