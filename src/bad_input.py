"""Bad input, one funnel: every refused config ends as one line ``error: ...`` and exit code 2, before training.

- ``funnel`` wraps a run. Parse errors (the parsers raise instead of exiting: ``PARSER_KWARGS``),
  a constructor's ``ValueError``, a missing dataset, Lightning's own checks and a full disk reach it
  as exceptions; it prints the message as one line, last (W&B closes inside it, so its closing lines
  come before), and removes the directories the failed start created, W&B's offline run with them.
  A failure after the first batch is not an input error: its traceback stays.
- ``check_config_files`` names an empty ``-c`` file (jsonargparse says only "Unexpected config:").
- ``check_trains`` refuses a ``fit`` that would train zero steps, naming the key.
- ``StartGuard`` (a callback) knows whether a stage reached its first batch, and which directories
  the start created (the run layout tells it).
"""

import argparse
import contextlib
import itertools
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from src.checkpoint_io import is_disk_full

# Raised by our checks, the DataModules and Lightning's own (max_epochs < -1, a missing checkpoint, ...)
# when the input is wrong: one line and exit 2 if they come before the first batch, a traceback after.
USER_ERRORS = (ValueError, OSError, MisconfigurationException, argparse.ArgumentError)

# jsonargparse raises ArgumentError instead of printing usage and exiting, for the main parser and each
# subcommand's (LightningCLI passes a subcommand's name's dict to that subcommand's parser).
SUBCOMMANDS = ("fit", "validate", "test", "predict")
PARSER_KWARGS: dict[str, Any] = {"exit_on_error": False, **{s: {"exit_on_error": False} for s in SUBCOMMANDS}}


class StartGuard(Callback):
    """Whether a stage reached its first batch, and the directories its start created (``claim``)."""

    def __init__(self) -> None:
        self.started = False
        self.root: str | None = None  # the run's directory, for the disk-full message
        self.created: list[Path] = []  # outermost first
        self._log_dir: Path | None = None

    def claim(self, root: str | os.PathLike, log_dir: str | os.PathLike, outer: list[str | os.PathLike]) -> None:
        """The run's log directory and the directories above it (outermost first), before anything writes:
        those that do not exist yet are this start's."""
        self.root = str(root)
        self.created = [Path(d) for d in [*outer, log_dir] if not Path(d).exists()]
        self._log_dir = Path(log_dir)

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.started = True

    def on_validation_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.started = True

    def on_test_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.started = True

    def on_predict_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self.started = True

    @rank_zero_only
    def remove_created(self) -> None:
        """A start that failed before any batch is not a run: what it wrote (config.yaml, metrics.csv, W&B's
        offline run, the DataModule's files) would sit among real runs. Its log directory is its own; an outer
        directory it created goes only if nothing else is in it by now (a run started beside it)."""
        for path in reversed(self.created):
            if path == self._log_dir:  # new, so this start's alone
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir():
                for sub, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):  # deepest first
                    with contextlib.suppress(OSError):  # not empty: keep it
                        Path(sub).rmdir()


# The frame of a jsonargparse report, not its complaint: nested keys, class paths, and a Union's list of
# subtypes with the failure of `None` (every optional group has it).
_SCAFFOLD = re.compile(
    r'Parser key "[^"]+":|Problem with given class_path .*:|Does not validate against any of the Union subtypes'
    r"|Subtypes: .*|Errors:|Expected a <class 'NoneType'>|Given value type: .*|Given value: NestedArg\(.*"
)


def one_line(error: BaseException) -> str:
    """The message a user needs, on one line, plus a hint.

    jsonargparse reports a parse error one nested key per line (``Parser key "model.net":`` / ``Problem
    with given class_path ...:`` / ``Parser key "unit":`` / the complaint): that becomes
    ``model.net.unit: <the complaint>``; of a Union's report only its subtypes' complaints stay. Anything
    else is the innermost cause: jsonargparse wraps a constructor's error in its own report (each Union
    subtype's failure, the whole Namespace).
    """
    if isinstance(error, argparse.ArgumentError):
        lines = [line.strip().removeprefix("- ") for line in error.message.strip().splitlines() if line.strip()]
        keys = [m.group(1) for line in lines if (m := re.fullmatch(r'Parser key "([^"]+)":', line))]
        rest = [line for line in lines if not _SCAFFOLD.fullmatch(line)] or lines
        complaint = " ".join(rest).replace(" Given value: ", ". Got value: ")  # a Union names the value once
        return f"{'.'.join(keys)}: {complaint}" if keys else complaint
    cause: BaseException = error
    while (inner := cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)) is not None:
        cause = inner
    message = str(cause)
    if isinstance(cause, FileNotFoundError):  # checkpoint paths are checked before this
        message += " (no dataset at hand? add -c configs/data/synthetic.yaml to train on random data of its shape)"
    return " ".join(line.strip() for line in message.strip().splitlines() if line.strip())


@contextlib.contextmanager
def funnel(guard: StartGuard) -> Iterator[None]:
    """Every input error of the run inside: ``error: <one line>`` on stderr, exit code 2; see the module."""
    try:
        yield
    except USER_ERRORS as e:
        # A full disk is not a bug either, even during training: its cause is outside the code.
        if guard.started and not is_disk_full(e):
            raise
        message = one_line(e)
        if is_disk_full(e) and "no space left on " not in message:  # a write outside our checkpoint IO
            message = f"no space left on the disk of {guard.root or '.'} ({message})"
        if not guard.started:
            guard.remove_created()
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def check_config_files(args: list[str]) -> None:
    """Each ``-c`` file exists, is YAML and holds keys, or its name is in the error: jsonargparse says only
    "Unexpected config:" for an empty one, and a YAML error without the file's name."""
    for flag, value in itertools.pairwise(args):
        if flag not in ("-c", "--config"):
            continue
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"config file {value} does not exist")
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"config file {value} is not valid YAML: {e}") from None
        if content is None:
            raise ValueError(f"config file {value} is empty (no keys, only comments or blank lines)")


def check_trains(trainer: Mapping[str, Any]) -> None:
    """A ``fit`` whose trainer config trains zero steps would run, then test an untrained "last" checkpoint:
    refuse it, naming the key. ``fast_dev_run`` overrides all three, so it counts."""
    if trainer.get("fast_dev_run"):
        return
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if (value := trainer.get(key)) == 0:
            raise ValueError(f"trainer.{key}: {value} trains no step; set a positive value, or drop the key")
