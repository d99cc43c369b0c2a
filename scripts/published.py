"""The tables of the results pages, regenerated from the raw files committed beside them.

A results page (benchmarks/gpu.md, benchmarks/host.md, docs/results.md, README.md) marks each generated table:

    <!-- generated: <renderer> <raw file> [<raw file> ...] -->
    | ... the table ... |
    <!-- end generated -->

Raw files are paths from the repository root: a campaign's ``results.json`` or a report's ``report.md``
(the record of runs whose directories were not kept). ``python -m scripts.published`` rewrites every
marked table from its raw files; ``--check`` changes nothing and exits 1 naming each table that differs,
which is how tests/test_published.py keeps the pages honest. A number in a page that no marked table
holds is prose: keep such numbers out of the pages, or put them in a table.
"""

import argparse
import csv
import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from src.markdown import markdown_table

REPO = Path(__file__).resolve().parents[1]
PAGES = ("benchmarks/gpu.md", "benchmarks/host.md", "docs/results.md", "README.md")
BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)

# CIFAR-10 test error (%) of the papers, for the reader's comparison; cited, not measured here.
# Identity Mappings (He et al. 2016), Table 2: ResNet-110 and ResNet-164 per unit ordering.
PAPER_UNITS = {
    "original": ("6.61", "5.93"),
    "bn_after_add": ("8.17", "6.50"),
    "relu_before_add": ("7.84", "6.14"),
    "relu_only_preact": ("6.71", "5.91"),
    "full_preact": ("6.37", "5.46"),
}
UNIT_LABELS = {
    "original": "(a) original",
    "bn_after_add": "(b) BN after addition",
    "relu_before_add": "(c) ReLU before addition",
    "relu_only_preact": "(d) ReLU-only pre-activation",
    "full_preact": "(e) full pre-activation",
}


# ---------------------------------------------------------------- reading the raw files


def load_stage(path: str, stage: str) -> dict:
    """One stage's entry of a campaign's results.json (status, seconds, box, data)."""
    results = json.loads((REPO / path).read_text())
    if stage not in results:
        raise KeyError(f"{path} has no stage {stage!r} (it has {', '.join(results)})")
    return results[stage]


def report_rows(path: str) -> dict[str, dict[str, str]]:
    """The run table of a scripts/report.py ``report.md``: run name -> column -> cell text."""
    lines = [line for line in (REPO / path).read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == len(header):
            rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def seconds(hh_mm_ss: str) -> float:
    """Lightning's ``max_time`` ``DD:HH:MM:SS`` in seconds."""
    days, hours, minutes, secs = (int(p) for p in hh_mm_ss.split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


# ---------------------------------------------------------------- number formats


def stat(values: Sequence[float], digits: int = 0) -> str:
    """``median (min-max)``, with thousands separators."""
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def mean_range(values: Sequence[float]) -> str:
    """``mean (min-max)`` of a few seeds, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def ratio(a: Sequence[float], b: Sequence[float], floor: float) -> list[str]:
    """Median of the per-repeat ratios a/b (min-max), and the reading against the A/A floor."""
    rs = [x / y for x, y in zip(a, b, strict=True)]
    med = statistics.median(rs)
    reading = "within the A/A floor" if abs(med - 1) <= floor else ("faster" if med > 1 else "slower")
    return [f"{med:.3f} ({min(rs):.3f}-{max(rs):.3f})", reading]


# ---------------------------------------------------------------- renderers: the GPU campaign


def stages(*paths: str) -> str:
    """What each campaign run did: stage, status, exit code, seconds against its box."""
    body = []
    for path in paths:
        run = Path(path).parent.name
        for name, r in json.loads((REPO / path).read_text()).items():
            status = r["status"] + (f" (exit {r['rc']})" if r.get("rc") not in (0, None) else "")
            body.append([run, name, status, f"{r['seconds']:.0f}", f"{r['box']:.0f}"])
    return markdown_table(["run", "stage", "status", "seconds", "box (s)"], body, numeric={3, 4})


def environment(path: str) -> str:
    """The machine and the software of a campaign (its env stage)."""
    env = load_stage(path, "env")["data"]
    gpu_name, driver, memory, clock, power = (s.strip() for s in env["nvidia_smi"].split(","))
    body = [
        ["GPU", f"{gpu_name} ({env['sms']} SMs, {memory}, max SM clock {clock}, power limit {power})"],
        ["driver", driver],
        ["CPU", f"{env['cpus']} cores, {env['cpu']}"],
        *([k, str(env[k])] for k in ("python", "torch", "torchvision", "cuda", "cudnn", "lightning", "torchmetrics")),
        *([k, str(env[k])] for k in ("timm", "triton", "jsonargparse", "wandb")),
    ]
    return markdown_table(["", "value"], body)


def smoke(path: str) -> str:
    items = load_stage(path, "smoke")["data"]
    body = [[name, "pass" if r["pass"] else f"FAIL: {r['why']}", f"{r['seconds']:.0f}"] for name, r in items.items()]
    return markdown_table(["item", "result", "seconds"], body, numeric={2})


def throughput(path: str) -> str:
    """ResNet-50 loops (images/s) and their ratios against the A/A floor of the same run."""
    data = load_stage(path, "throughput")["data"]
    ips, floor = data["ips"], data["aa_floor"]
    loops = markdown_table(
        ["loop", "images/s, median (min-max)", "repeats"],
        [[name, stat(values), str(len(values))] for name, values in ips.items()],
        numeric={1, 2},
    )
    pairs = [("ours bare", "torchvision bare"), ("ours bare", "timm bare"), ("ours Lightning fit", "ours bare")]
    body = [[f"{a} / {b}", *ratio(ips[a], ips[b], floor)] for a, b in pairs if a in ips and b in ips]
    ratios = markdown_table(["ratio", f"median (min-max); A/A floor ±{100 * floor:.2f}%", "reading"], body)
    return f"{loops}\n\n{ratios}"


def family(path: str) -> str:
    """Lightning fit per depth (ResNet-50 from the loops above), with the repeats behind each row."""
    data = load_stage(path, "throughput")["data"]
    rows = dict(data["family"])
    rows["resnet50"] = {"batch": data["batch"], "ips": data["ips"]["ours Lightning fit"]}
    order = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    body = [
        [name, str(rows[name]["batch"]), str(len(rows[name]["ips"])), stat(rows[name]["ips"])]
        if name in rows
        else [name, "", "", "not measured (the stage ran out of time)"]
        for name in order
    ]
    return markdown_table(["model", "batch", "repeats", "images/s, median (min-max)"], body, numeric={1, 2, 3})


def repro_runs(path: str, *reports: str) -> str:
    """Every reproduction run: what it trained before the box stopped it, and its errors.

    ``train time`` is the sum of the run's per-epoch times (report.md), ``epochs logged`` counts epochs
    with a logged training metric, a part-epoch cut by ``max_time`` included.
    """
    data = load_stage(path, "repro")["data"]
    box = seconds(data["max_time"])
    report = {name: row for r in reports for name, row in report_rows(r).items()}
    body = []
    for name, r in data["runs"].items():
        row = report[name]
        trained = float(row["train time (s)"])
        cut = "yes" if trained >= box - 3 else "not shown"
        errors = [f"{r[k]:.2f}" for k in ("train_err", "val_err", "test_err")]
        body.append([name, row["epochs"], f"{trained:.1f}", cut, *errors])
    header = [
        "run",
        "epochs logged",
        f"train time (s) of the {box:.0f} s box",
        "cut by the box",
        "train err (%), last logged epoch",
        "best val err (%)",
        "test err (%)",
    ]
    return markdown_table(header, body, numeric={1, 2, 4, 5, 6})


def _configs(path: str) -> dict[str, dict[str, list[float]]]:
    runs = load_stage(path, "repro")["data"]["runs"]
    out: dict[str, dict[str, list[float]]] = {}
    for name, r in runs.items():
        config = out.setdefault(name.rsplit("-s", 1)[0], {"test": [], "train": []})
        config["test"].append(r["test_err"])
        config["train"].append(r["train_err"])
    return out


def residual(rows: dict[str, Any], depth: int) -> Any:
    """The residual net of ``depth``: ``r20`` (its own name), ``resnet20`` in runs recorded before."""
    return rows[f"r{depth}"] if f"r{depth}" in rows else rows[f"resnet{depth}"]


def repro_depths(path: str) -> str:
    """Degradation grid: test error of plain and residual nets per depth, mean of the seeds (min-max)."""
    configs = _configs(path)
    depths = sorted(int(c[len("plain") :]) for c in configs if c.startswith("plain"))
    body = [
        [str(d), mean_range(configs[f"plain{d}"]["test"]), mean_range(residual(configs, d)["test"])] for d in depths
    ]
    return markdown_table(["depth", "plain: test err (%)", "ResNet (A): test err (%)"], body, numeric={0, 1, 2})


def repro_units(path: str) -> str:
    """Unit orderings on ResNet-20 (B): test error, mean of the seeds (min-max), beside the paper's ResNet-110."""
    configs = _configs(path)
    body = [[UNIT_LABELS[u], mean_range(configs[f"r20-{u}"]["test"]), PAPER_UNITS[u][0]] for u in UNIT_LABELS]
    return markdown_table(["unit (R20, shortcut B)", "test err (%)", "paper R110 test err (%)"], body, numeric={1, 2})


# ---------------------------------------------------------------- renderers: reports of CPU runs


def cpu_degradation(report: str) -> str:
    rows = report_rows(report)
    depths = sorted(int(n[len("plain") :]) for n in rows if n.startswith("plain"))
    cols = ("best val err (%)", "final test err (%)")
    body = [[str(d), *(net[c] for net in (rows[f"plain{d}"], residual(rows, d)) for c in cols)] for d in depths]
    header = ["depth", "plain: best val err (%)", "plain: test err (%)", "ResNet (A): best val err (%)"]
    return markdown_table([*header, "ResNet (A): test err (%)"], body, numeric={0, 1, 2, 3, 4})


def cpu_seeds(report: str) -> str:
    body = []
    for name, row in report_rows(report).items():
        net, seeds = re.fullmatch(r"(\w+) \((\d+) seeds\)", name).groups()  # type: ignore[union-attr]
        body.append([net, seeds, row["final train err (%)"], row["final test err (%)"]])
    header = ["net", "seeds", "final train err (%): mean ± std (min, median)", "test err (%): mean ± std (min, median)"]
    return markdown_table(header, body, numeric={1, 2, 3})


def cpu_units(report: str) -> str:
    rows = report_rows(report)
    body = []
    for unit, label in UNIT_LABELS.items():
        cells = [f"{rows[f'{net}-{unit}']['best val err (%)']} / {rows[f'{net}-{unit}']['final test err (%)']}"
                 for net in ("r20", "r29")]  # fmt: skip
        body.append([label, *cells, " / ".join(PAPER_UNITS[unit])])
    header = ["unit", "R20 basic: best val / test err (%)", "R29 bottleneck: best val / test err (%)"]
    return markdown_table([*header, "paper R110 / R164 test err (%)"], body, numeric={1, 2, 3})


# ---------------------------------------------------------------- renderers: scripts/bench_host.py


def _host(path: str, label: str) -> dict:
    return json.loads((REPO / path).read_text())[label]  # scripts/bench_host.py --label LABEL


def host_steps(path: str, label: str = "after") -> str:
    """ms per step of each loop (median (min-max)) and the fits' overhead over the bare loop, per shape."""
    body = []
    for shape in _host(path, label)["shapes"].values():
        if "ms_per_step" not in shape:
            continue
        bare = shape["ms_per_step"]["bare"]
        for name, values in shape["ms_per_step"].items():
            over = [v - b for v, b in zip(values, bare, strict=True)]
            cells = [stat(over, 3), stat([v / b for v, b in zip(values, bare, strict=True)], 2)]
            body.append([shape["what"], name, stat(values, 3), *(cells if name.startswith("fit") else ["", ""])])
        body.append([shape["what"], "A/A floor (bare twice)", "", "", f"±{100 * shape['aa_floor']:.0f}%"])
    header = ["shape", "loop", "ms/step", "overhead over bare (ms/step)", "fit / bare"]
    return markdown_table(header, body, numeric={2, 3, 4})


def host_steps_before(path: str) -> str:  # the first measurement, before the changes
    return host_steps(path, "before")


def host_breakdown(path: str, label: str = "after", shape: str = "tiny") -> str:
    """µs per step of each item of ``fit, as run``: the baseline commit's code and this one's, one process."""
    data = _host(path, label)["shapes"][shape]
    after, before = data["breakdown_us"], data.get("baseline_breakdown_us") or {}
    items = list(dict.fromkeys([*before, *after]))
    body = [[item, f"{before[item]:,.0f}" if item in before else "", f"{after.get(item, 0):,.0f}"] for item in items]
    return markdown_table(["item (µs per step)", data.get("baseline") or "before", "this code"], body, numeric={1, 2})


def host_compile(path: str, label: str = "compile") -> str:
    """Seconds of a compiled fit's first step in a fresh process: empty compile cache (cold), the cold one's (warm)."""
    body = []
    for shape in _host(path, label)["shapes"].values():
        if "compile_s" in shape:
            cold, warm = shape["compile_s"]["cold"], shape["compile_s"]["warm"]
            ratios = [w / c for w, c in zip(warm, cold, strict=True)]
            body.append([shape["what"], str(len(cold)), stat(cold, 1), stat(warm, 1), stat(ratios, 3)])
    return markdown_table(["shape", "pairs", "cold (s)", "warm (s)", "warm / cold"], body, numeric={1, 2, 3, 4})


# ---------------------------------------------------------------- renderers: the quickstart run


def quickstart(console: str, metrics: str, hparams: str) -> str:
    """README's quickstart ending: the lines the run printed, and what it trained, from the run's own files."""
    lines = (REPO / console).read_text().splitlines()
    shown = [line for line in lines if line.startswith(("Test top-1 accuracy", "run directory:"))]
    if len(shown) != 2:
        raise ValueError(f"{console}: expected one test-accuracy line and one run-directory line, found {shown}")
    with (REPO / metrics).open() as f:
        rows = list(csv.DictReader(f))
    ends = [r for r in rows if r.get("perf/epoch_s")]  # one row per trained epoch, at its last step (0-based)
    epochs = [float(r["perf/epoch_s"]) for r in ends]
    steps = int(ends[-1]["step"]) + 1
    facts = {k: v.strip() for k, v in (line.split(": ", 1) for line in (REPO / hparams).read_text().splitlines()
                                        if line.startswith(("git/", "hw/")))}  # fmt: skip
    dirty = " with uncommitted changes" if facts.get("git/dirty") == "true" else ""
    minutes, secs = divmod(round(sum(epochs)), 60)
    return "\n".join(
        [
            "```",
            *shown,
            "```",
            "",
            f"(measured at commit {facts['git/commit'][:7]}{dirty}: {len(epochs)} epochs, {steps} steps, "
            f"{minutes} min {secs} s of training (the epochs' `perf/epoch_s`) on {facts['hw/cpus']} cores of "
            f"{facts['hw/device']}; raw files: `{Path(console).parent}/`)",
        ]
    )


RENDERERS: dict[str, Callable[..., str]] = {
    f.__name__: f
    for f in (
        stages,
        environment,
        smoke,
        throughput,
        family,
        repro_runs,
        repro_depths,
        repro_units,
        cpu_degradation,
        cpu_seeds,
        cpu_units,
        host_steps,
        host_steps_before,
        host_breakdown,
        host_compile,
        quickstart,
    )
}


# ---------------------------------------------------------------- pages


def regenerate(text: str, page: str) -> tuple[str, list[str]]:
    """The page with every marked table rendered anew, and the specs of the tables that changed."""
    changed: list[str] = []

    def render(match: re.Match) -> str:
        spec = match["spec"]
        name, *raw = spec.split()
        if name not in RENDERERS:
            raise ValueError(f"{page}: unknown renderer {name!r} in '<!-- generated: {spec} -->'")
        missing = [p for p in raw if not (REPO / p).is_file()]
        if missing:
            raise FileNotFoundError(f"{page}: '{spec}' names missing raw file(s) {', '.join(missing)}")
        body = RENDERERS[name](*raw) + "\n"
        if body != match["body"]:
            changed.append(spec)
        return match[1] + body + match[4]

    return BLOCK.sub(render, text), changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pages", nargs="*", default=list(PAGES), help=f"pages (default: {' '.join(PAGES)})")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its raw files")
    args = p.parse_args(argv)
    stale = []
    for page in args.pages:
        text = (REPO / page).read_text()
        new, changed = regenerate(text, page)
        stale += [f"{page}: {spec}" for spec in changed]
        if changed and not args.check:
            (REPO / page).write_text(new)
    for line in stale:
        print(("differs from its raw files: " if args.check else "rewritten: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
