"""The GPU campaign in its --quick form on CPU: every stage runs, so the command cannot rot between GPUs.

The checks of each stage's results are functions, so that the numbers are checked against the raw
measurements they come from (the A/A floor against the two A/A series, each verdict against its ratios
and the floor), not only for being there.
"""

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from scripts import bench
from scripts.campaign import driver, plan
from tests.conftest import REPO

VERDICTS = ("no difference", "faster", "slower")


def expected_verdict(a: list[float], b: list[float], floor: float) -> str:
    med = statistics.median(x / y for x, y in zip(a, b, strict=True))
    return "no difference" if abs(med - 1) <= floor else ("faster" if med > 1 else "slower")


def check_verdict(text: str, a: list[float], b: list[float], floor: float) -> None:
    """The one verdict the measurements imply is the one written, and no other."""
    want = expected_verdict(a, b, floor)
    assert [v for v in VERDICTS if f", {v} (A/A" in text] == [want], (text, want)


def check_floor(floor: float, a: list[float], a_again: list[float]) -> None:
    assert floor == pytest.approx(max(abs(x / y - 1) for x, y in zip(a, a_again, strict=True)), rel=1e-9)


def check_throughput(tp: dict[str, Any]) -> None:
    ips = tp["ips"]
    loops = ("torchvision bare", "ours bare", "ours bare (A/A)", "ours Lightning fit", "timm bare")
    assert set(ips) == set(loops), "timm is in the dev extra: its row must be measured"
    assert all(len(ips[loop]) == tp["repeats"] and min(ips[loop]) > 0 for loop in loops)
    check_floor(tp["aa_floor"], ips["ours bare"], ips["ours bare (A/A)"])
    pairs = {
        "ours / torchvision (bare)": ("ours bare", "torchvision bare"),
        "Lightning fit / bare (ours)": ("ours Lightning fit", "ours bare"),
        "ours / timm (bare)": ("ours bare", "timm bare"),
    }
    assert set(tp["ratios"]) == set(pairs)
    for name, (a, b) in pairs.items():
        check_verdict(tp["ratios"][name], ips[a], ips[b], tp["aa_floor"])
    assert tp["failures"] == [] and list(tp["family"]) == ["resnet18"]


def check_repro(rp: dict[str, Any], work: Path) -> None:
    runs = rp["runs"]
    assert {r.rsplit("-s", 1)[0] for r in runs} == {"plain8", "r8", "r8-full_preact"}
    assert {r.rsplit("-s", 1)[1] for r in runs} == {"0", "1"}  # two seeds of every configuration
    assert all(r["rc"] == 0 and r["test_err"] is not None for r in runs.values()), runs
    assert rp["reports"] == {"degradation": True, "units": True}
    # Sized from a measured step: --quick calibrates one run of 2 steps per epoch (the experiments' --quick)
    cal = rp["calibration"]
    assert cal["runs"] == 1 and cal["steps_per_epoch"] == 2 and cal["step_s_per_cost"] > 0
    for name, r in runs.items():
        # every epoch of every run is in results.json, counted by its steps, none cut
        assert [(e["epoch"], e["steps"], e["complete"]) for e in r["epochs"]] == [(0, 2, True)], name
        assert (r["epochs_done"], r["complete_epochs"], r["cut"], r["steps"]) == ("1", 1, False, 2)
        check_epochs_match_the_csv(r["epochs"], next(work.glob(f"repro/{r['experiment']}/{name}/*/metrics.csv")))


def check_epochs_match_the_csv(epochs: list[dict[str, Any]], metrics_csv: Path) -> None:
    """results.json holds every epoch the run logged, with the values of its metrics.csv."""
    rows = [row for row in csv.DictReader(metrics_csv.open()) if row.get("train/err1")]
    assert [(e["epoch"], e["steps"]) for e in epochs] == [(int(row["epoch"]), int(row["step"]) + 1) for row in rows]
    assert [e["train/err1"] for e in epochs] == pytest.approx([float(row["train/err1"]) for row in rows], abs=1e-4)


def check_tta(tta: dict[str, Any], work: Path) -> None:
    assert tta["curve"] and 0 < tta["curve"][-1]["test_acc1"] <= 100 and min(tta["images_per_s"]) > 0
    assert [(c["steps"], c["complete"]) for c in tta["curve"]] == [(3, True), (6, True)]  # 2 epochs of 3 batches
    check_epochs_match_the_csv(tta["epochs"], next(work.glob("tta/r20/*/metrics.csv")))


def check_host(host: dict[str, Any]) -> None:
    for key in ("eager", "compiled"):
        ips = host[key]["ips"]
        assert set(ips) == {"bare", "bare (A/A)", "fit"} and all(min(v) > 0 for v in ips.values())
        check_floor(host[key]["aa_floor"], ips["bare"], ips["bare (A/A)"])
        check_verdict(host[key]["fit/bare"], ips["fit"], ips["bare"], host[key]["aa_floor"])
    assert host["backend"] == "aot_eager" and "compile_s" not in host  # cold/warm: GPU only


def check_graphs(graphs: dict[str, Any], work: Path) -> None:
    assert graphs["failures"] == [] and graphs["graphs"] == {"rc": 2, "config_error": True}  # CUDA graphs on CPU
    eager = graphs["eager"]
    assert [(c["steps"], c["complete"]) for c in eager["curve"]] == [(3, True), (6, True)]
    assert 0 < eager["final_test_acc"] <= 100 and min(eager["images_per_s"]) > 0
    check_epochs_match_the_csv(eager["epochs"], next(work.glob("graphs-eager/r20/*/metrics.csv")))


def check_sync_without_cuda(sync: dict[str, Any], summary: str) -> None:
    # No CUDA here: the stage runs its path (the fit with SyncCheck, 9 steps) and says what it could not check.
    assert sync["cuda"] is False and sync["sync"] is None and sync["rc"] == 0
    assert sync["armed_steps"] == list(range(2, 8))  # no logging step (every 50) among them
    assert "the sync debug mode could not be armed" in summary


@pytest.mark.slow
@pytest.mark.timeout(1400)
def test_quick_campaign_runs_every_stage_and_writes_its_results(tmp_path: Path, fmnist_dir: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "scripts.campaign", "run", "--quick", "--out", str(out), "--work", str(work)]
    cmd += ["--budget", "1160", "--data-dir", str(fmnist_dir)]  # ~600 s on a loaded 2-core machine
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1320)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    summary = (out / "summary.md").read_text()
    assert {name: r["status"] for name, r in results.items()} == dict.fromkeys(plan.STAGES, "ok"), summary[-6000:]
    assert all(r["seconds"] <= r["box"] + 6 for r in results.values()), "a stage outlived its time box"
    # At most 8 files come back from the GPU machine; the diff only when the tree was dirty.
    made = json.loads((out / "provenance.json").read_text())
    files = ["campaign.log", "campaign.tar.gz", "provenance.json", "results.json", "summary.md"]
    assert sorted(p.name for p in out.iterdir()) == sorted(files + ["provenance.diff"] * bool(made["git/dirty"]))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert (
        made["git/commit"] == head and made["environment"]["versions/torch"] == results["env"]["data"]["versions/torch"]
    )
    assert f"Commit {head[:10]}" in summary

    smoke = results["smoke"]["data"]["items"]
    # (16-mixed is bf16-mixed on a CPU: --quick runs it once)
    assert set(smoke) == {"fit+test 32-true", "fit+test bf16-mixed", "channels_last",
                          "on_device", "resume from last.ckpt", "predict 10-crop"}  # fmt: skip
    assert not {name: item["why"] for name, item in smoke.items() if not item["pass"]}

    check_sync_without_cuda(results["sync"]["data"], summary)
    check_throughput(results["throughput"]["data"])

    check_tta(results["tta"]["data"], work)

    check_repro(results["repro"]["data"], work)

    comp = results["compile"]["data"]
    assert min(comp["ips"]["compiled"]) > 0 and min(comp["ips"]["eager"]) > 0
    check_floor(comp["aa_floor"], comp["ips"]["eager"], comp["ips"]["eager (A/A)"])
    check_verdict(comp["compiled/eager"], comp["ips"]["compiled"], comp["ips"]["eager"], comp["aa_floor"])

    check_host(results["host"]["data"])
    check_graphs(results["graphs"]["data"], work)

    for name in plan.STAGES:
        assert f"## {name}" in summary
    for name, text in results["throughput"]["data"]["ratios"].items():
        assert f"| {name} | {text} |" in summary

    with tarfile.open(out / "campaign.tar.gz") as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith(".ckpt")], "checkpoints must stay behind"
    assert any(n.startswith("repro/report-degradation/figures/") and n.endswith(".png") for n in names)
    assert "repro/report-units/provenance.json" in names


@pytest.mark.slow
def test_a_missing_timm_is_a_recorded_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The throughput stage without timm: the other loops are measured, the stage is failed, naming timm."""
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError, as without the package
    args = argparse.Namespace(stage="throughput", work=tmp_path, deadline=time.time() + 1, quick=True,
                              data_dir=tmp_path, results=tmp_path / "none.json", repro_epochs=None)  # fmt: skip
    driver.run_stage(args)  # a deadline already past: the per-depth table is skipped, the loops still run
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["status"].startswith("failed: timm is not importable")
    assert "timm bare" not in saved["data"]["ips"] and min(saved["data"]["ips"]["ours bare"]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["host", "graphs"])
def test_host_and_graphs_stages_run_quick(stage: str, tmp_path: Path, fmnist_dir: Path) -> None:
    """The two stages alone, as the campaign runs them (the whole campaign takes many minutes here)."""
    box = plan.stage(stage).BOX.quick
    args = argparse.Namespace(stage=stage, work=tmp_path, deadline=time.time() + box, quick=True,
                              data_dir=fmnist_dir, results=tmp_path / "none.json", repro_epochs=None)  # fmt: skip
    driver.run_stage(args)
    saved = json.loads((tmp_path / f"{stage}.json").read_text())
    assert saved["status"] == "ok", saved
    check_host(saved["data"]) if stage == "host" else check_graphs(saved["data"], tmp_path)


def test_ratio_inside_the_aa_floor_reads_no_difference() -> None:
    a, a_again = [100.0, 102.0, 98.0], [101.0, 100.0, 99.0]
    floor = bench.aa_floor(a, a_again)
    assert floor == pytest.approx(0.02)
    assert "no difference" in bench.compare([101.0, 103.0, 99.0], a, floor)
    assert "faster" in bench.compare([110.0, 112.0, 108.0], a, floor)
    assert "slower" in bench.compare([90.0, 91.0, 89.0], a, floor)
    assert bench.fmt_stat([3.0, 1.0, 2.0]) == "2 (1-3)"
