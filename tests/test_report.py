import base64
import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.image
import pytest
import yaml

from scripts import metrics, report
from src import environment
from src.models.profile import count_params
from src.models.resnet import ResNet
from tests.conftest import REPO, require_module
from tests.test_environment import shadow
from tests.tiny_runs import fit, isolate_wandb, tiny_args

RUNS = {  # run name: (group, extra CLI args)
    "r8": ("units", []),
    "r8-full_preact": ("units", ["--model.net.init_args.unit=full_preact"]),
    "plain8": ("plain", ["--model.net.init_args.shortcut=none"]),
}


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three real tiny runs, W&B offline: two in group 'units', one in 'plain'."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, root / "home")
        mp.setenv("WANDB_MODE", "offline")
        for name, (group, extra) in RUNS.items():
            fit(tiny_args(root / "runs", name, f"--wandb.group={group}", *extra))
    yield root / "runs"


def csv_column(run_dir: Path, key: str) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def markdown_rows(md: str) -> dict[str, dict[str, str]]:
    """Table rows of the report keyed by run name, as {column: cell}."""
    rows, header = {}, None
    for line in md.splitlines():
        if not line.startswith("|") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "run":
            header = cells
        else:
            assert header is not None
            rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_report_table_matches_the_metrics_files(run_root: Path, tmp_path: Path) -> None:
    out = report.main([str(run_root), "--out", str(tmp_path / "out")])
    md = out["markdown"].read_text()
    *groups, last = re.findall(r"^## (.+)$", md, flags=re.M)
    assert sorted(groups) == ["plain", "units"] and last == "Environments"
    rows = markdown_rows(md.split("## Environments")[0])
    assert set(rows) == set(RUNS)  # one row per run
    for run_dir in sorted(run_root.glob("*/version_*")):
        name = run_dir.parent.name
        row = rows[name]
        assert float(row["best val err (%)"]) == pytest.approx(min(csv_column(run_dir, "val/err1")), abs=0.005)
        assert float(row["final test err (%)"]) == pytest.approx(csv_column(run_dir, "test/err1")[-1], abs=0.005)
        assert float(row["train time (s)"]) == pytest.approx(sum(csv_column(run_dir, "perf/epoch_s")), abs=0.05)
        assert row["epochs"] == "2"
        init_args = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["net"]["init_args"]
        net = ResNet(**{**init_args, "num_classes": 10, "in_channels": 1})
        assert float(row["params (M)"]) == pytest.approx(count_params(net) / 1e6, abs=5e-4)
        assert (row["unit"], row["shortcut"], row["depth"]) == (net.unit, net.shortcut, "8")
    # All three ran here, in one environment: one env id, no warning, one row in the environments table.
    assert len({row["env"] for row in rows.values()}) == 1 and re.fullmatch(r"[0-9a-f]{8}", rows[name]["env"])
    assert "Warning" not in md
    (env,) = markdown_rows(md.split("## Environments")[1].replace("| env |", "| run |")).values()
    assert env["packages"] == environment.facts()["env/packages"] and sorted(env["runs"].split(", ")) == sorted(RUNS)


def test_figures_are_pngs_and_the_html_is_self_contained(run_root: Path, tmp_path: Path) -> None:
    out = report.main([str(run_root), "--out", str(tmp_path / "out"), "--x", "epoch"])
    figures = sorted(out["figures"].glob("*.png"))
    assert [f.name for f in figures] == ["plain.png", "units.png"]
    page = out["html"].read_text()
    for figure in figures:
        data = figure.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = matplotlib.image.imread(figure)
        assert pixels.shape[:2] == (600, 960) and pixels.std() > 0.05  # 8x5 in at 120 dpi, not blank
        assert base64.b64encode(data).decode() in page  # inlined, so the HTML travels alone
    assert 'src="figures/' not in page and "<td>r8-full_preact</td>" in page
    assert "](figures/units.png)" in out["markdown"].read_text()


def test_offline_wandb_runs_give_the_same_numbers_as_the_csv(run_root: Path) -> None:
    """The W&B history path (API or offline log) and the CSV path agree, so online reports match local ones."""
    for run_dir in sorted(run_root.glob("*/version_*")):
        (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
        config, history, info = metrics.read_wandb_offline(log)
        from_wandb = metrics.run_from_wandb(info["name"], info["group"], str(log), config, history)
        from_csv = metrics.read_run_dir(run_dir, run_root)
        assert (from_wandb.name, from_wandb.group) == (from_csv.name, from_csv.group) == (
            run_dir.parent.name, RUNS[run_dir.parent.name][0])  # fmt: skip
        for key in (metrics.ERR_VAL, metrics.ERR_TRAIN):
            assert from_csv.series(key), f"{key} missing from {run_dir}/metrics.csv"
            # Steps exactly, values approximately: pytest 9's approx() rejects nested data (lists of tuples).
            wandb_steps, wandb_values = zip(*from_wandb.series(key), strict=True)
            csv_steps, csv_values = zip(*from_csv.series(key), strict=True)
            assert wandb_steps == csv_steps
            assert list(wandb_values) == pytest.approx(list(csv_values))
        assert from_wandb.last(metrics.ERR_TEST) == pytest.approx(from_csv.last(metrics.ERR_TEST))


def test_runs_from_different_environments_are_flagged(
    run_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run of the module's beside a real run made in another environment (one runtime package at another
    version): the report names both environments and warns in the group and on stderr."""
    root = tmp_path / "runs"
    shutil.copytree(run_root / "r8", root / "r8")
    isolate_wandb(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.syspath_prepend(str(shadow(tmp_path / "site", "tqdm", "4.0.0")))
    environment.facts.cache_clear()  # computed once per process: this run must see the new tqdm
    try:
        fit(tiny_args(root, "elsewhere", "--wandb.group=units", "--wandb.name=r8-elsewhere"))
    finally:
        environment.facts.cache_clear()
    out = report.main([str(root), "--out", str(tmp_path / "out")])
    md = out["markdown"].read_text()
    rows = markdown_rows(md.split("## Environments")[0])
    assert set(rows) == {"r8", "r8-elsewhere"}
    ours, theirs = rows["r8"]["env"], rows["r8-elsewhere"]["env"]
    assert ours != theirs
    warning = (
        f"Warning: these runs come from 2 different environments: {theirs} (r8-elsewhere); {ours} (r8); "
        "they differ in env/packages."
    )
    assert f"> **{warning}" in md and warning in out["html"].read_text()
    assert f"units: {warning}" in capsys.readouterr().err
    environments = markdown_rows(md.split("## Environments")[1].replace("| env |", "| run |"))
    assert f"tqdm 4.0.0 (lock {environment.locked_here()['tqdm']})" in environments[theirs]["off the lock"]
    assert environments[theirs]["torch"] == environments[ours]["torch"]


def test_offline_wandb_dir_alone_is_a_report_input(run_root: Path, tmp_path: Path) -> None:
    run_dir = next(run_root.glob("r8/version_*"))
    (wandb_dir,) = run_dir.glob("wandb/offline-run-*")
    out = report.main([str(wandb_dir), "--out", str(tmp_path / "out")])
    rows = markdown_rows(out["markdown"].read_text().split("## Environments")[0])
    assert list(rows) == [run_dir.parent.name]


def test_errors_name_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match=f"run directory {tmp_path / 'nope'} does not exist"):
        report.main([str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match=f"no metrics.csv or offline-run-\\*/run-\\*.wandb under {tmp_path}"):
        report.main([str(tmp_path)])
    (tmp_path / "bad.wandb").write_bytes(b"not a log")
    with pytest.raises(ValueError, match=r"bad\.wandb is not a W&B transaction log"):
        list(metrics.read_wandb_file(tmp_path / "bad.wandb"))


def test_wandb_api_filters_and_an_unreachable_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert metrics.wandb_filters("units", ["cifar", "seed0"]) == {
        "group": "units",
        "$and": [{"tags": {"$in": ["cifar"]}}, {"tags": {"$in": ["seed0"]}}],
    }
    isolate_wandb(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    args = ["--wandb-project", "me/resnet", "--wandb-group", "units", "--wandb-timeout", "3", "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="could not read runs of W&B project 'me/resnet'"):
        report.main(args)


def test_wandb_report_is_built_offline_and_save_needs_a_login(tmp_path: Path, monkeypatch) -> None:
    wr = require_module("wandb_workspaces.reports.v2", "pip install wandb-workspaces (the dev and report extras)")
    built = report.wandb_report("me", "resnet", ["units", "plain"], "Units")
    assert (built.entity, built.project, built.title) == ("me", "resnet", "Units")
    grids = [b for b in built.blocks if isinstance(b, wr.PanelGrid)]
    assert [g.runsets[0].filters for g in grids] == ["Group = 'units'", "Group = 'plain'"]
    assert grids[0].panels[0].y == [metrics.ERR_TRAIN, metrics.ERR_VAL]
    isolate_wandb(monkeypatch, tmp_path / "home")  # no API key anywhere
    with pytest.raises(Exception, match="not logged in"):
        built.save()


def test_runs_that_differ_only_in_their_seed_are_one_row_with_their_spread(tmp_path: Path) -> None:
    isolate = pytest.MonkeyPatch()
    isolate_wandb(isolate, tmp_path / "home")
    isolate.setenv("WANDB_MODE", "disabled")
    try:
        # Named as scripts/experiments name them with --seeds (the W&B name is the run's name).
        dirs = [fit(tiny_args(tmp_path / "runs", f"v-seed{k}", f"--seed_everything={k}", "--wandb.group=g",
                              f"--wandb.name=v-seed{k}", epochs=2)) for k in range(3)]  # fmt: skip
        other = fit(tiny_args(tmp_path / "runs", "lr", "--model.lr=0.2", "--wandb.group=g", "--wandb.name=lr",
                              epochs=1))  # fmt: skip
    finally:
        isolate.undo()
    runs = [metrics.read_run_dir(d, tmp_path / "runs") for d in [*dirs, other]]
    assert [len(g) for g in metrics.seed_groups(runs)] == [3, 1]  # lr=0.2 is another variant, not a seed
    header, rows = report.table(runs)
    row = dict(zip(header, rows[0], strict=True))
    assert row["run"] == "v (3 seeds)" and rows[1][0] == "lr"
    tests = [csv_column(d, "test/err1")[-1] for d in dirs]
    assert len(set(tests)) > 1  # the seeds really trained differently
    mean, std = statistics.fmean(tests), statistics.stdev(tests)
    assert row["final test err (%)"] == f"{mean:.2f} ± {std:.2f} ({min(tests):.2f}-{max(tests):.2f})"
    assert row["depth"] == "8" and "±" not in row["params (M)"]  # shared facts stay plain
    paths = report.write_report(runs, tmp_path / "report")
    assert "v (3 seeds)" in paths["markdown"].read_text()
    assert matplotlib.image.imread(next(paths["figures"].glob("*.png"))).ndim == 3
    # One panel per value of a run fact, side by side at 6.5 in x 120 dpi each (4 run names here).
    panels = report.plot_errors(runs, "t", tmp_path / "panels.png", panels="run/name")
    assert matplotlib.image.imread(panels).shape[1] == 4 * 780


class SleepAt(L.Callback):
    """Sleeps ``seconds`` after optimizer step ``step``: a run's ``max_time`` then runs out right there."""

    def __init__(self, step: int, seconds: float) -> None:
        self.step, self.seconds = step, seconds

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            time.sleep(self.seconds)


def test_an_epoch_that_max_time_cut_is_reported_as_cut_with_its_steps(tmp_path: Path) -> None:
    # 10 steps per epoch; max_time (6 s) runs out in the sleep after step 15, i.e. 5 steps into epoch 2.
    sleep = json.dumps({"class_path": "tests.test_report.SleepAt", "init_args": {"step": 15, "seconds": 8}})
    run_dir = fit(tiny_args(tmp_path / "runs", "cut", "--data.train_size=320", "--trainer.max_time=00:00:00:06",
                            f"--trainer.callbacks+={sleep}", epochs=5))  # fmt: skip
    run = metrics.read_run_dir(run_dir, tmp_path / "runs")
    # Lightning logged the fragment's epoch-end metrics as if it were an epoch: counting those says 2.
    assert len(run.series("perf/epoch_s")) == len(run.series(metrics.ERR_TRAIN)) == 2
    done = metrics.progress(run)
    assert done is not None
    assert (done.complete, done.steps, done.cut_steps, done.per_epoch) == (1, 15, 5, 10)
    assert [e.complete for e in metrics.epochs(run)] == [True, False]
    first_epoch_train_err = run.series(metrics.ERR_TRAIN)[0][1]
    assert metrics.last_complete(run, metrics.ERR_TRAIN) == first_epoch_train_err
    header, rows = report.table([run])
    row = dict(zip(header, rows[0], strict=True))
    assert row["epochs"] == "1 + 5/10 steps (cut)"
    assert row["train err (%), last full epoch"] == f"{first_epoch_train_err:.2f}"


def test_one_epoch_of_unknown_length_is_not_called_complete(tmp_path: Path) -> None:
    run_dir = fit(tiny_args(tmp_path / "runs", "one", epochs=1))
    run = metrics.read_run_dir(run_dir, tmp_path / "runs")
    assert [e.complete for e in metrics.epochs(run)] == [None]
    assert str(metrics.progress(run)) == "1?"
    run.facts[metrics.STEPS_PER_EPOCH] = 3  # what a run that records its epoch length says
    assert str(metrics.progress(run)) == "1"
    run.facts[metrics.STEPS_PER_EPOCH] = 4
    assert str(metrics.progress(run)) == "0 + 3/4 steps (cut)"


def test_the_report_reads_run_files_and_imports_no_model_code() -> None:
    code = "import sys, scripts.report; print(sorted(m for m in sys.modules if m.startswith('src.models')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
