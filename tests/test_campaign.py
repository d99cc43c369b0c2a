"""The GPU campaign in its --quick form on CPU: every stage runs, so the command cannot rot between GPUs."""

import csv
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from scripts import bench
from tests.conftest import REPO

STAGES = ["env", "smoke", "throughput", "tta", "repro", "compile"]


@pytest.mark.slow
@pytest.mark.timeout(1100)
def test_quick_campaign_runs_every_stage_and_writes_its_results(tmp_path: Path, fmnist_dir: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "scripts/campaign.py", "run", "--quick", "--out", str(out), "--work", str(work)]
    cmd += ["--budget", "840", "--data-dir", str(fmnist_dir)]  # ~400 s on a loaded 2-core machine
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert {name: r["status"] for name, r in results.items()} == dict.fromkeys(STAGES, "ok"), (
        out / "summary.md"
    ).read_text()[-6000:]
    assert all(r["seconds"] <= r["box"] + 6 for r in results.values()), "a stage outlived its time box"
    # At most 8 files come back from the GPU machine: the campaign writes 4.
    assert sorted(p.name for p in out.iterdir()) == ["campaign.log", "campaign.tar.gz", "results.json", "summary.md"]

    smoke = results["smoke"]["data"]
    assert set(smoke) >= {"fit+test 32-true", "fit+test bf16-mixed", "fit+test 16-mixed", "channels_last"}
    assert set(smoke) >= {"on_device", "resume from last.ckpt", "predict 10-crop"}
    failed = {name: (item["why"], item["tail"][-1500:]) for name, item in smoke.items() if not item["pass"]}
    assert not failed, failed

    tp = results["throughput"]["data"]
    for loop in ("torchvision bare", "ours bare", "ours bare (A/A)", "ours Lightning fit"):
        assert len(tp["ips"][loop]) == tp["repeats"] and min(tp["ips"][loop]) > 0
    assert tp["aa_floor"] >= 0 and "resnet101" in tp["family"]

    tta = results["tta"]["data"]
    assert tta["curve"] and 0 < tta["curve"][-1][2] <= 100 and min(tta["images_per_s"]) > 0

    runs = results["repro"]["data"]["runs"]
    assert {r.rsplit("-s", 1)[0] for r in runs} == {"plain8", "resnet8", "r8-full_preact"}
    assert {r.rsplit("-s", 1)[1] for r in runs} == {"0", "1"}  # two seeds of every configuration
    assert all(r["rc"] == 0 and r["test_err"] is not None for r in runs.values()), runs
    assert results["repro"]["data"]["reports"] == {"degradation": True, "units": True}

    comp = results["compile"]["data"]
    assert min(comp["ips"]["compiled"]) > 0 and min(comp["ips"]["eager"]) > 0

    summary = (out / "summary.md").read_text()
    for name in STAGES:
        assert f"## {name}" in summary
    assert "A/A" in summary and any(verdict in summary for verdict in ("no difference", "faster", "slower"))

    with tarfile.open(out / "campaign.tar.gz") as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith(".ckpt")], "checkpoints must stay behind"
    assert any(n.startswith("repro/report-degradation/figures/") and n.endswith(".png") for n in names)
    metrics = next(work.glob("repro/degradation/plain8-s1/*/metrics.csv"))
    assert any(row.get("test/err1") for row in csv.DictReader(metrics.open()))


def test_ratio_inside_the_aa_floor_reads_no_difference() -> None:
    a, a_again = [100.0, 102.0, 98.0], [101.0, 100.0, 99.0]
    floor = bench.aa_floor(a, a_again)
    assert floor == pytest.approx(0.02)
    assert "no difference" in bench.compare([101.0, 103.0, 99.0], a, floor)
    assert "faster" in bench.compare([110.0, 112.0, 108.0], a, floor)
    assert "slower" in bench.compare([90.0, 91.0, 89.0], a, floor)
    assert bench.fmt_stat([3.0, 1.0, 2.0]) == "2 (1-3)"
