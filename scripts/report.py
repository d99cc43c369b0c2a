"""Turn a group of runs into a comparison report: Markdown, self-contained HTML and PNG figures.

    python scripts/report.py runs/units --out reports/units              # run directories (searched recursively)
    python scripts/report.py --wandb-project me/resnet-template --wandb-group units --out reports/units
    python scripts/report.py --wandb-project me/resnet-template --wandb-group units --wandb-report

Local inputs are the run directories the CLI writes (``metrics.csv``, ``hparams.yaml``); a directory
with only an offline W&B run (``offline-run-*/run-*.wandb``) is read from that transaction log.
Online, runs come from the W&B API, filtered by group and tags. Per group the report has a table
(model, depth, unit, shortcut, params, GMACs, final train error, best val error, final test error, train
time, environment; runs that differ only in their seed as one row of mean ± std) and a figure of top-1
error per run, thin dashed = train, bold = validation, seeds as a shaded band, optionally one panel per
value of a run fact (``--panels model/shortcut``: plain | residual, as in the ResNet paper's Fig. 6). The
test split is scored once, at the end: its error is in the table. A group whose runs
come from different software environments (Python, packages, torch, CUDA, cuDNN) gets a warning line,
and the report ends with a table of the environments.
``--wandb-report`` also publishes the comparison as a W&B Report (``pip install wandb-workspaces``).
"""

import argparse
import base64
import csv
import hashlib
import html
import json
import math
import re
import statistics
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.markdown import markdown_table
from src.models.checkpoint_fit import flatten

ERR_TRAIN, ERR_VAL, ERR_TEST = "train/err1", "val/err1", "test/err1"


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


# ---------------------------------------------------------------- the report

COLUMNS = [  # header, how to get it, format
    ("run", lambda r: r.name, "{}"),
    ("depth", lambda r: r.facts.get("model/depth"), "{}"),
    ("block", lambda r: r.facts.get("model/block"), "{}"),
    ("unit", lambda r: r.facts.get("model/unit"), "{}"),
    ("shortcut", lambda r: r.facts.get("model/shortcut"), "{}"),
    ("params (M)", lambda r: _scaled(r.facts.get("model/params"), 1e-6), "{:.3f}"),
    ("GMACs", lambda r: r.facts.get("model/GMACs"), "{:.3g}"),
    ("epochs", lambda r: len(r.series("perf/epoch_s")) or None, "{}"),
    ("final train err (%)", lambda r: r.last(ERR_TRAIN), "{:.2f}"),
    ("best val err (%)", lambda r: r.best(ERR_VAL), "{:.2f}"),
    ("final test err (%)", lambda r: r.last(ERR_TEST), "{:.2f}"),
    ("train time (s)", lambda r: r.total("perf/epoch_s"), "{:.1f}"),
    ("images/s", lambda r: r.last("perf/images_per_s"), "{:.0f}"),
    ("env", lambda r: env_id(r), "{}"),
]


def _scaled(value: Any, factor: float) -> float | None:
    return None if value is None else float(value) * factor


# Config keys that say where and under which name a run went, not what it trained: runs that differ only
# in these and in their seed are seeds of one variant.
NOT_THE_VARIANT = ("seed_everything", "name", "run_dir", "ckpt_path", "trainer.default_root_dir", "wandb")


def variant_key(run: Run) -> str:
    """What the run trained: its config without seed, names and paths (its name, without a config)."""
    if not run.config:
        return f"name:{run.name}"
    flat = {k: v for k, v in flatten(run.config).items() if not k.startswith(NOT_THE_VARIANT)}
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


def spread(values: list[float], fmt: str) -> str:
    """mean ± sample std, then min and median: how the papers report several runs."""
    mean, std, median = statistics.fmean(values), statistics.stdev(values), statistics.median(values)
    return f"{fmt.format(mean)} ± {fmt.format(std)} (min {fmt.format(min(values))}, median {fmt.format(median)})"


def table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per variant: a single run's values, or over its seeds mean ± std (min, median)."""
    header = [c[0] for c in COLUMNS]
    body = []
    for members in seed_groups(runs):
        cells = []
        for title, get, fmt in COLUMNS:
            values = [get(run) for run in members]
            missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
            if title == "run":
                cells.append(variant_name(members))
            elif all(missing):
                cells.append("–")
            elif len({str(v) for v in values}) == 1:
                cells.append(fmt.format(values[0]))
            elif fmt != "{}" and not any(missing):
                cells.append(spread([float(v) for v in values], fmt))
            else:
                cells.append("varies")
        body.append(cells)
    return header, body


def html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


# What makes two runs' software the same: the interpreter, the package digest (torch and its CUDA wheels
# included), and CUDA and cuDNN, which also cover a cluster's own torch build (it has no such wheels).
ENV_KEYS = ("versions/python", "env/packages", "versions/torch", "versions/cuda", "versions/cudnn")
ENV_COLUMNS = [  # header, run fact
    ("python", "versions/python"),
    ("torch", "versions/torch"),
    ("CUDA", "versions/cuda"),
    ("cuDNN", "versions/cudnn"),
    ("lightning", "versions/lightning"),
    ("lock", "env/lock"),
    ("packages", "env/packages"),
    ("off the lock", "env/off_lock"),
]


def env_id(run: Run) -> str | None:
    """A short name for the run's software environment; None for runs that did not record one."""
    if run.facts.get("env/packages") is None:
        return None
    key = "\n".join(str(run.facts.get(k)) for k in ENV_KEYS)
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _fact(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return "–" if value is None else str(value)


def environment_warning(runs: list[Run]) -> str | None:
    """One line when ``runs`` come from more than one environment (or some recorded none), else None."""
    envs: dict[str | None, list[str]] = {}
    for run in runs:
        envs.setdefault(env_id(run), []).append(run.name)
    if len(envs) < 2:
        return None
    known = [r for r in runs if env_id(r)]
    differ = [k for k in ENV_KEYS if len({_fact(r.facts.get(k)) for r in known}) > 1]
    parts = [f"{env or 'not recorded'} ({', '.join(names)})" for env, names in envs.items()]
    return (
        f"Warning: these runs come from {len(envs)} different environments: {'; '.join(parts)}"
        + (f"; they differ in {', '.join(differ)}" if differ else "")
        + ". Their numbers may differ because of the software, not only the model."
    )


def environments_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per environment: its versions, digests, packages off the lock, and its runs."""
    envs: dict[str, list[Run]] = {}
    for run in runs:
        envs.setdefault(env_id(run) or "not recorded", []).append(run)
    header = ["env", *(h for h, _ in ENV_COLUMNS), "runs"]
    body = [
        [env, *(_fact(members[0].facts.get(k)) for _, k in ENV_COLUMNS), ", ".join(r.name for r in members)]
        for env, members in envs.items()
    ]
    return header, body


def seed_band(runs: list[Run], key: str, x: str) -> list[tuple[float, float, float, float]]:
    """(x, mean, min, max) of ``key`` over ``runs`` at the x every run logged it at."""
    series = [dict(run.series(key, x)) for run in runs]
    common = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return [(at, statistics.fmean(v), min(v), max(v)) for at in common for v in [[s[at] for s in series]]]


def panel_of(run: Run, panels: str | None) -> str:
    """The panel a run is drawn in: the value of the fact ``panels`` (``plain`` vs ``residual`` for the
    shortcut, as the ResNet paper's Fig. 6 puts them side by side), or one panel for all."""
    if not panels:
        return ""
    value = run.facts.get(panels)
    if panels == "model/shortcut":
        return "plain" if value == "none" else "residual"
    if panels == "model/depth":
        return f"{value} layers"
    return f"{panels.rsplit('/', 1)[-1]} {value}"


def plot_errors(runs: list[Run], title: str, path: Path, x: str = "step", panels: str | None = None) -> Path:
    """Top-1 error (%) per variant, thin dashed = train, bold = validation, as in the papers' figures; the
    seeds of a variant as their mean with the min-max range shaded. With ``panels`` (a run fact) one
    panel per value, on a shared y axis. The final test error is in the table, not on these axes."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    by_panel: dict[str, list[Run]] = {}
    for run in runs:
        by_panel.setdefault(panel_of(run, panels), []).append(run)
    n = len(by_panel)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n if n > 1 else 8, 5), dpi=120, sharey=True, squeeze=False)
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    for ax, (panel, members_of_panel) in zip(axes[0], by_panel.items(), strict=True):
        handles = []
        for i, members in enumerate(seed_groups(members_of_panel)):
            color = colors[i % len(colors)]
            for key, width, style in ((ERR_TRAIN, 1.0, "--"), (ERR_VAL, 2.6, "-")):
                points = seed_band(members, key, x)
                if points:
                    xs, mean, low, high = (list(c) for c in zip(*points, strict=True))
                    ax.plot(xs, mean, style, color=color, linewidth=width, marker="." if len(xs) < 20 else None)
                    if len(members) > 1:  # the seeds' range as a shaded band around their mean
                        alpha = 0.25 if key == ERR_VAL else 0.12
                        ax.fill_between(xs, low, high, color=color, alpha=alpha, linewidth=0)
            handles.append(Line2D([], [], color=color, linewidth=2.6, label=variant_name(members)))
        ax.add_artist(ax.legend(handles=handles, title="run", loc="upper right", fontsize=9))
        ax.set_xlabel("iterations (optimizer steps)" if x == "step" else "epochs")
        ax.set_title(panel or title)
        ax.grid(True, alpha=0.3)
    styles = [
        Line2D([], [], color="gray", linewidth=1.0, linestyle="--", label="train (thin, dashed)"),
        Line2D([], [], color="gray", linewidth=2.6, label="val (bold)"),
    ]
    axes[0][0].legend(handles=styles, loc="lower left", fontsize=9)
    axes[0][0].set_ylabel("top-1 error (%)")
    if n > 1:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "runs"


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return groups


def write_report(
    runs: list[Run], out: Path, title: str = "Run comparison", x: str = "step", panels: str | None = None
) -> dict[str, Path]:
    """Writes ``report.md``, ``report.html`` (figures inlined) and ``figures/<group>.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", ""]
    body_html = [f"<h1>{html.escape(title)}</h1>"]
    legend = "Top-1 error (%): thin dashed = train, bold = validation; the final test error is in the table."
    for group, members in group_runs(runs).items():
        header, rows = table(members)
        figure = plot_errors(members, f"{group}: top-1 error", out / "figures" / f"{_slug(group)}.png", x, panels)
        rel = figure.relative_to(out).as_posix()
        warning = environment_warning(members)
        md += [f"## {group}", ""] + ([f"> **{warning}**", ""] if warning else [])
        md += [
            markdown_table(header, rows, numeric=range(5, len(header))),
            "",
            f"![{group}: top-1 error]({rel})",
            "",
            legend,
            "",
        ]
        png = base64.b64encode(figure.read_bytes()).decode()
        body_html += [
            f"<h2>{html.escape(group)}</h2>",
            f'<p class="warning">{html.escape(warning)}</p>' if warning else "",
            html_table(header, rows),
            f'<figure><img src="data:image/png;base64,{png}" alt="{html.escape(group)}: top-1 error">'
            f"<figcaption>{legend}</figcaption></figure>",
        ]
    header, rows = environments_table(runs)
    intro = "The software each run recorded (python -m src.environment shows the current one), by env id."
    md += ["## Environments", "", intro, "", markdown_table(header, rows, numeric=range(5, len(header))), ""]
    body_html += ["<h2>Environments</h2>", f"<p>{html.escape(intro)}</p>", html_table(header, rows)]
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
        "td:nth-child(-n+5){text-align:left}img{max-width:100%}.warning{color:#a00;font-weight:bold}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body_html)}</body></html>"  # noqa: E501
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text(page)
    return {"markdown": out / "report.md", "html": out / "report.html", "figures": out / "figures"}


def wandb_report(entity: str, project: str, groups: list[str], title: str) -> Any:
    """The same comparison as a W&B Report: per group a runs table and the train/val error curves.

    Built offline; ``.save()`` needs the network and a login (the runs must be synced first).
    """
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as err:
        raise RuntimeError("--wandb-report needs wandb-workspaces: pip install 'resnet-template[report]'") from err
    blocks: list[Any] = [wr.P("Top-1 error (%) per run: train and validation; table columns from the run config.")]
    for group in groups:
        blocks += [
            wr.H2(group),
            wr.PanelGrid(
                runsets=[wr.Runset(entity=entity, project=project, name=group, filters=f"Group = '{group}'")],
                panels=[
                    wr.LinePlot(title="top-1 error (%)", x="trainer/global_step", y=[ERR_TRAIN, ERR_VAL]),
                    wr.BarPlot(title="final test error (%)", metrics=[ERR_TEST]),
                ],
            ),
        ]
    return wr.Report(entity=entity, project=project, title=title, blocks=blocks)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories or folders holding them")
    parser.add_argument("--out", type=Path, default=Path("reports/latest"), help="output folder (default %(default)s)")
    parser.add_argument("--title", default="Run comparison")
    parser.add_argument("--x", choices=["step", "epoch"], default="step", help="x axis of the curves")
    parser.add_argument("--panels", help="one panel per value of this run fact, e.g. model/shortcut, model/depth")
    parser.add_argument("--wandb-project", help="read runs from W&B instead: entity/project")
    parser.add_argument("--wandb-group", help="only runs of this W&B group")
    parser.add_argument("--wandb-tag", action="append", default=[], help="only runs with this tag (repeatable)")
    parser.add_argument("--wandb-report", action="store_true", help="also publish a W&B Report (online)")
    parser.add_argument("--wandb-timeout", type=int, default=30, help="seconds per W&B API request")
    args = parser.parse_args(argv)
    if bool(args.runs) == bool(args.wandb_project):
        parser.error("give run directories or --wandb-project entity/project (one of the two)")
    if args.wandb_report and (not args.wandb_project or "/" not in args.wandb_project):
        parser.error("--wandb-report needs --wandb-project entity/project")
    try:
        if args.wandb_project:
            runs = fetch_wandb_runs(args.wandb_project, args.wandb_group, args.wandb_tag, args.wandb_timeout)
        else:
            runs = find_runs(args.runs)
        outputs = write_report(runs, args.out, args.title, args.x, args.panels)
        for group, members in group_runs(runs).items():
            warning = environment_warning(members)
            if warning:
                print(f"report.py: {group}: {warning}", file=sys.stderr)
        print(f"{len(runs)} runs -> {outputs['markdown']}, {outputs['html']}, {outputs['figures']}/")
        if args.wandb_report:
            entity, project = args.wandb_project.split("/", 1)
            report = wandb_report(entity, project, list(group_runs(runs)), args.title)
            try:
                report.save()
            except Exception as err:
                raise RuntimeError(f"could not save the W&B Report to {entity}/{project}: {err}") from err
            print(f"W&B Report: {report.url}")
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        sys.exit(f"report.py: {err}")
    return outputs


if __name__ == "__main__":
    main()
