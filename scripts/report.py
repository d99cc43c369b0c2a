"""Turn a group of runs into a comparison report: Markdown, self-contained HTML and PNG figures.

    python scripts/report.py runs/units --out reports/units              # run directories (searched recursively)
    python scripts/report.py --wandb-project me/resnet-template --wandb-group units --out reports/units
    python scripts/report.py --wandb-project me/resnet-template --wandb-group units --wandb-report

Runs are read by ``scripts/metrics.py``: run directories (``metrics.csv``, ``hparams.yaml``, ``config.yaml``),
offline W&B runs, or the W&B API filtered by group and tags; every fact in the report is one the run wrote.
Per group the report has a table (model, depth, unit, shortcut, params, GMACs, complete epochs with the
steps of an epoch ``max_time`` cut, train error at the last complete epoch, best val error, final test
error, train time, environment; runs that differ only in their seed as one row of mean ± std (min-max))
and a figure of top-1
error per run, thin dashed = train, bold = validation, seeds as a shaded band, optionally one panel per
value of a run fact (``--panels model/shortcut``: plain | residual, as in the ResNet paper's Fig. 6). The
test split is scored once, at the end: its error is in the table. A group whose runs
come from different software environments (Python, packages, torch, CUDA, cuDNN) gets a warning line,
and the report ends with a table of the environments and the commits the runs recorded. The report's
own provenance (commit, diff, machine, software) goes to ``provenance.json`` beside it.
``--wandb-report`` also publishes the comparison as a W&B Report (``pip install wandb-workspaces``).
"""

import argparse
import base64
import hashlib
import html
import math
import re
import sys
from pathlib import Path
from typing import Any

from scripts import metrics
from scripts.figures import plot_errors
from scripts.metrics import ERR_TEST, ERR_TRAIN, ERR_VAL, Run, last_complete, progress, seed_groups, variant_name

# The readers live in scripts.metrics; the offline W&B reader stays importable from here for older callers.
from scripts.metrics import read_wandb_offline as read_wandb_offline
from src import provenance
from src.markdown import markdown_table, spread

# ---------------------------------------------------------------- the report

COLUMNS = [  # header, how to get it, format
    ("run", lambda r: r.name, "{}"),
    ("depth", lambda r: r.facts.get("model/depth"), "{}"),
    ("block", lambda r: r.facts.get("model/block"), "{}"),
    ("unit", lambda r: r.facts.get("model/unit"), "{}"),
    ("shortcut", lambda r: r.facts.get("model/shortcut"), "{}"),
    ("params (M)", lambda r: _scaled(r.facts.get("model/params"), 1e-6), "{:.3f}"),
    ("GMACs", lambda r: r.facts.get("model/GMACs"), "{:.3g}"),
    # complete epochs, and the steps of a last epoch that max_time cut
    ("epochs", lambda r: None if progress(r) is None else str(progress(r)), "{}"),
    ("train err (%), last full epoch", lambda r: last_complete(r, ERR_TRAIN), "{:.2f}"),
    ("best val err (%)", lambda r: r.best(ERR_VAL), "{:.2f}"),
    ("final test err (%)", lambda r: r.last(ERR_TEST), "{:.2f}"),
    ("train time (s)", lambda r: r.total("perf/epoch_s"), "{:.1f}"),
    ("images/s", lambda r: r.last("perf/images_per_s"), "{:.0f}"),
    ("env", lambda r: env_id(r), "{}"),
]


def _scaled(value: Any, factor: float) -> float | None:
    return None if value is None else float(value) * factor


def table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per variant: a single run's values, or over its seeds mean ± std (min-max)."""
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
    header = ["env", *(h for h, _ in ENV_COLUMNS), "code", "runs"]
    body = [
        [
            env,
            *(_fact(members[0].facts.get(k)) for _, k in ENV_COLUMNS),
            _codes(members),
            ", ".join(r.name for r in members),
        ]
        for env, members in envs.items()
    ]
    return header, body


def _codes(runs: list[Run]) -> str:
    """The commits the runs recorded, each marked when its tree had uncommitted changes."""
    codes = {
        str(r.facts.get("git/commit") or "not recorded")[:10] + (" + changes" if r.facts.get("git/dirty") else "")
        for r in runs
    }
    return ", ".join(sorted(codes))


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
    made = provenance.write(out)
    made_by = f"Made by `{made['command']}`. {provenance.summary(made)} (provenance.json)"
    md = [f"# {title}", "", made_by, ""]
    body_html = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(made_by)}</p>"]
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
            runs = metrics.fetch_wandb_runs(args.wandb_project, args.wandb_group, args.wandb_tag, args.wandb_timeout)
        else:
            runs = metrics.find_runs(args.runs)
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
