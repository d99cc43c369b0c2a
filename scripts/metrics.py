"""Reading what runs wrote: metrics, facts and config, from run directories or W&B; and epochs counted right.

One reader for the report, the campaign and the experiments. Local inputs are the run directories
the CLI writes (``metrics.csv``, ``hparams.yaml``, ``config.yaml``); a directory with only an offline
W&B run (``offline-run-*/run-*.wandb``) is read from that transaction log; online, runs come from the
W&B API.

An epoch counts as trained only when all its steps ran. ``max_time`` stops a run in the middle of an
epoch, and Lightning still logs that epoch's epoch-end metrics (train error over the batches it saw,
a validation pass, its wall time), so "epochs that logged a train metric" overcounts. ``epochs()`` reads
the global step of each epoch's end (the ``step`` column) against the steps per epoch: the run's
``run/steps_per_epoch`` fact where it recorded one, else the steps its first epoch took when a later
epoch followed (only the last epoch of a run can be cut).
"""

import csv
import json
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ERR_TRAIN, ERR_VAL, ERR_TEST = "train/err1", "val/err1", "test/err1"
STEPS_PER_EPOCH = "run/steps_per_epoch"


@dataclass
class Run:
    name: str
    group: str
    source: str  # directory or W&B path, for the reader to find it again
    facts: dict[str, Any] = field(default_factory=dict)  # hyperparameters: model/*, hw/*, git/*, run/*
    rows: list[dict[str, float]] = field(default_factory=list)  # logged metrics, one dict per logging call
    config: dict[str, Any] = field(default_factory=dict)  # the resolved CLI config (config.yaml / W&B "cli")

    def series(self, key: str, x: str = "step") -> list[tuple[float, float]]:
        """(x, value) for every row that logged ``key``; x is the global step or the number of epochs done."""
        points = []
        for row in self.rows:
            if key in row and x in row:
                points.append((row[x] + 1 if x == "epoch" else row[x], row[key]))
        return points

    def best(self, key: str) -> float | None:
        values = [v for _, v in self.series(key)]
        return min(values) if values else None

    def last(self, key: str) -> float | None:
        values = [v for _, v in self.series(key)]
        return values[-1] if values else None

    def total(self, key: str) -> float | None:
        values = [v for _, v in self.series(key)]
        return sum(values) if values else None


# ---------------------------------------------------------------- reading runs


class _LenientLoader(yaml.SafeLoader):
    """Reads hparams.yaml even where Lightning wrote Python tags (``!!python/object``...): keeps the plain value."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        seq = loader.construct_sequence(node, deep=True)
        return seq[0] if len(seq) == 1 else seq
    return loader.construct_scalar(node)


_LenientLoader.add_multi_constructor("tag:yaml.org,2002:python/", _untagged)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of Lightning's metrics.csv without the empty cells (each row holds the metrics of one log call)."""
    with path.open(newline="") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {
                k: v for k, v in ((k, _number(v)) for k, v in raw.items() if k and v not in (None, "")) if v is not None
            }
            rows.append(row)
    return rows


def read_run_dir(run_dir: Path, root: Path) -> Run:
    hparams_file = run_dir / "hparams.yaml"
    facts = yaml.load(hparams_file.read_text(), Loader=_LenientLoader) if hparams_file.exists() else {}
    facts = facts or {}
    rel = run_dir.relative_to(root) if run_dir != root else Path(run_dir.name)
    name = facts.get("run/name") or str(rel)
    # Runs without a W&B group are grouped by the experiment directory, runs/<name>/version_N -> <name>.
    group = facts.get("run/group") or (run_dir.parent.name if run_dir.name.startswith("version_") else run_dir.name)
    config_file = run_dir / "config.yaml"
    config = yaml.load(config_file.read_text(), Loader=_LenientLoader) if config_file.exists() else {}
    return Run(name, group, str(run_dir), facts, read_metrics_csv(run_dir / "metrics.csv"), config or {})


# The offline transaction log is LevelDB's log format: 32 KiB blocks of records, each with a
# 7-byte header (crc32c, length, type); a record split across blocks is FIRST, MIDDLE..., LAST.
# wandb has no public reader for it yet (wandb.Api() needs the server, wandb#9448; `wandb parse` and
# wandb.beta.LocalApi are open PRs, wandb#11581, wandb#12745), so this is best-effort: prefer metrics.csv.
_BLOCK, _HEADER, _FULL, _LAST = 32768, 7, 1, 4


def read_wandb_file(path: Path) -> Iterator[Any]:
    """The protobuf records (``wandb.proto.wandb_internal_pb2.Record``) of an offline ``run-*.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a W&B transaction log (no ':W&B' header)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # block trailer too short for a header: zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0:
            break
        pending += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _LAST):
            record = pb.Record()  # type: ignore[attr-defined]  # generated protobuf code, no stubs
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_wandb_offline(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(config, history rows, run info: name, group, tags, project) of an offline run file."""
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    for record in read_wandb_file(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info = {"name": run.display_name, "group": run.run_group, "tags": list(run.tags), "project": run.project}
            items = run.config.update
        elif kind == "config":
            items = record.config.update
        elif kind == "history":
            history.append({it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in record.history.item})
            continue
        else:
            continue
        for it in items:
            config[it.key or "/".join(it.nested_key)] = json.loads(it.value_json)
    return config, history, info


def rows_from_wandb_history(history: Iterable[dict[str, Any]]) -> list[dict[str, float]]:
    """W&B history rows (API ``scan_history`` or offline log) shaped like metrics.csv: ``step`` = global step."""
    rows = []
    for h in history:
        row = {k: float(v) for k, v in h.items() if not k.startswith("_") and isinstance(v, int | float)}
        if "trainer/global_step" in row:
            row["step"] = row.pop("trainer/global_step")
        rows.append(row)
    return rows


def run_from_wandb(name: str, group: str | None, source: str, config: dict[str, Any], history: Iterable[dict]) -> Run:
    facts = {
        k: (v.get("value", v) if isinstance(v, dict) and set(v) <= {"value", "desc"} else v) for k, v in config.items()
    }
    return Run(facts.get("run/name") or name, group or facts.get("run/group") or "ungrouped", source, facts,
               rows_from_wandb_history(history), facts.get("cli") or {})  # fmt: skip


def find_runs(paths: Iterable[Path]) -> list[Run]:
    """Every run under ``paths``: directories with a metrics.csv, else offline W&B runs without one."""
    runs: list[Run] = []
    for root in paths:
        if not root.exists():
            raise FileNotFoundError(f"run directory {root} does not exist")
        csv_dirs = sorted(p.parent for p in root.rglob("metrics.csv"))
        runs += [read_run_dir(d, root) for d in csv_dirs]
        covered = [d.resolve() for d in csv_dirs]
        for log in sorted(root.rglob("run-*.wandb")):
            if any(parent in covered for parent in log.resolve().parents):
                continue  # the CSV beside it is the primary record
            config, history, info = read_wandb_offline(log)
            runs.append(
                run_from_wandb(info.get("name") or log.parent.name, info.get("group"), str(log.parent), config, history)
            )
        if not runs:
            raise FileNotFoundError(f"no metrics.csv or offline-run-*/run-*.wandb under {root}")
    return runs


def wandb_filters(group: str | None, tags: list[str]) -> dict[str, Any]:
    """The MongoDB-style filter of ``wandb.Api().runs``: a group and all of the tags."""
    filters: dict[str, Any] = {}
    if group:
        filters["group"] = group
    if tags:
        filters["$and"] = [{"tags": {"$in": [t]}} for t in tags]
    return filters


def fetch_wandb_runs(project: str, group: str | None, tags: list[str], timeout: int = 30) -> list[Run]:
    """Runs of ``entity/project`` from the W&B API; a clear error when the server cannot be reached."""
    import wandb

    try:
        api = wandb.Api(timeout=timeout)
        runs = []
        for r in api.runs(project, filters=wandb_filters(group, tags)):
            history = r.scan_history()
            runs.append(run_from_wandb(r.name, r.group, f"{project}/{r.id}", dict(r.config), history))
    except Exception as err:  # no key, no network, no project: wandb raises several types
        raise RuntimeError(f"could not read runs of W&B project {project!r} ({type(err).__name__}: {err})") from err
    if not runs:
        raise RuntimeError(f"W&B project {project!r} has no runs matching {wandb_filters(group, tags)}")
    return runs


def flat_config(tree: Any, prefix: str = "") -> dict[str, str]:
    """A resolved config as ``{"model.net.init_args.widths": "[16, 32]"}``."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): str(tree)}
    out: dict[str, str] = {}
    for key, value in tree.items():
        out.update(flat_config(value, f"{prefix}{key}."))
    return out


# ---------------------------------------------------------------- seeds of one variant

# Config keys that say where and under which name a run went, not what it trained: runs that differ only
# in these and in their seed are seeds of one variant.
NOT_THE_VARIANT = ("seed_everything", "name", "run_dir", "ckpt_path", "trainer.default_root_dir", "wandb")


def variant_key(run: Run) -> str:
    """What the run trained: its config without seed, names and paths (its name, without a config)."""
    if not run.config:
        return f"name:{run.name}"
    flat = {k: v for k, v in flat_config(run.config).items() if not k.startswith(NOT_THE_VARIANT)}
    return json.dumps(flat, sort_keys=True)


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """``runs`` in order, those that differ only in their seed together (one list per variant). Runs of
    one variant with a seed in common are repeats (another machine, another environment), kept apart."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(variant_key(run), []).append(run)
    out: list[list[Run]] = []
    for members in groups.values():
        seeds = [run.config.get("seed_everything") for run in members]
        distinct = None not in seeds and len(set(seeds)) == len(seeds)
        out += [members] if distinct else [[run] for run in members]
    return out


def variant_name(runs: list[Run]) -> str:
    if len(runs) == 1:
        return runs[0].name
    base = {re.sub(r"[-_]?seed\d+$", "", r.name) for r in runs}
    return f"{base.pop() if len(base) == 1 else runs[0].name} ({len(runs)} seeds)"


# ---------------------------------------------------------------- epochs


@dataclass
class Epoch:
    index: int  # 0-based, as Lightning counts
    steps: int  # optimizer steps done when the epoch ended (the global step)
    complete: bool | None  # all its steps ran; None when the run's steps per epoch are unknown
    values: dict[str, float]  # its epoch-end metrics: train/*, val/*, perf/*

    def get(self, key: str) -> float | None:
        return self.values.get(key)


def _epoch_metric(key: str) -> bool:
    return key.startswith(("train/", "val/", "perf/")) and not key.endswith("_step")


def _epoch_ends(run: Run) -> dict[int, dict[str, float]]:
    """The epoch-end rows of a run merged per epoch (train, validation and perf rows share an epoch)."""
    ends: dict[int, dict[str, float]] = {}
    for row in run.rows:
        if "epoch" in row and "step" in row and any(_epoch_metric(k) for k in row):
            ends.setdefault(int(row["epoch"]), {}).update(row)
    return ends


def steps_per_epoch(run: Run) -> int | None:
    """The run's recorded steps per epoch, else the steps of its first epoch when another followed it."""
    recorded = run.facts.get(STEPS_PER_EPOCH)
    if recorded:
        return int(recorded)
    ends = _epoch_ends(run)
    return int(ends[0]["step"]) + 1 if 0 in ends and len(ends) > 1 else None


def epochs(run: Run) -> list[Epoch]:
    """The run's epochs in order; an epoch-end row's ``step`` is the global step minus one."""
    per_epoch = steps_per_epoch(run)
    out = []
    for index, row in sorted(_epoch_ends(run).items()):
        steps = int(row["step"]) + 1
        complete = None if per_epoch is None else steps >= (index + 1) * per_epoch
        out.append(Epoch(index, steps, complete, {k: v for k, v in row.items() if _epoch_metric(k)}))
    return out


@dataclass
class Progress:
    """How far a run got: complete epochs, and the steps of a last epoch that was cut."""

    complete: int
    steps: int  # optimizer steps trained in all
    cut_steps: int = 0  # steps of the cut last epoch (0: not cut, or unknown)
    per_epoch: int | None = None
    known: bool = True  # False when the steps per epoch could not be found

    def __str__(self) -> str:
        if not self.known:
            return f"{self.complete}?"
        return (
            f"{self.complete} + {self.cut_steps}/{self.per_epoch} steps (cut)" if self.cut_steps else str(self.complete)
        )


def progress(run: Run) -> Progress | None:
    """None for a run that logged no epoch end."""
    eps = epochs(run)
    if not eps:
        return None
    last, per_epoch = eps[-1], steps_per_epoch(run)
    if per_epoch is None:  # one epoch, its length unknown: it may be whole or a fragment
        return Progress(len(eps), last.steps, known=False)
    whole = sum(1 for e in eps if e.complete)
    cut = 0 if last.complete else last.steps - last.index * per_epoch
    return Progress(whole, last.steps, cut, per_epoch)


def last_complete(run: Run, key: str) -> float | None:
    """``key`` at the end of the run's last complete epoch (the last epoch when completeness is unknown)."""
    eps = [e for e in epochs(run) if e.complete is not False and key in e.values]
    return eps[-1].values[key] if eps else None
