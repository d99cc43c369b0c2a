"""scripts/bench_imagenet.py runs end to end (--quick) into its section of the results file; no speed is asserted."""

import json
import re
import subprocess
import sys
from pathlib import Path

from scripts.bench_data import SECTION, kept_section
from tests.conftest import REPO

STAT = r"[\d,]+ \([\d,]+-[\d,]+\)"
RATIO = r"[\d.]+ \([\d.]+-[\d.]+\)"


def test_bench_imagenet_quick_writes_its_section_with_spreads_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "data.md"
    out.write_text("# Data loader throughput\n\nthe small datasets' table\n")
    for _ in range(2):  # the second run replaces the section it wrote, and keeps what was there before it
        subprocess.run([sys.executable, "scripts/bench_imagenet.py", "--quick", "--out", str(out)], cwd=REPO,
                       check=True, capture_output=True, timeout=600)  # fmt: skip
    text = out.read_text()
    assert text.startswith("# Data loader throughput\n\nthe small datasets' table\n") and text.count(SECTION) == 1
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    loaders = {r.split(" | ")[0][2:]: r for r in rows}
    want = {"reference", "ours per_image, scale", "ours fast, scale", "reference eval", "ours eval"}
    assert want <= set(loaders)
    for name in want:
        assert re.search(rf"\| {STAT} \|", loaders[name]), loaders[name]
    assert re.search(rf"\| {RATIO} \| {RATIO} \|$", loaders["ours fast, scale"])  # vs reference, vs per_image
    assert re.search(r"A/A floor \(`ours fast, scale` built twice\): ±[\d.]+%", text)
    needs = [r for r in rows if r.startswith("| ours fast, scale (")]
    assert len(needs) == 1 and re.search(r"\| \d+ \| \d+ \| \d+ \|$", needs[0])  # workers for ResNet-18/50/101
    raw = json.loads((tmp_path / "imagenet_loader.json").read_text())
    assert len(raw["ips"]["ours fast, scale"]) == 2 and raw["fixture"]["images"] == 66
    made = json.loads((tmp_path / "imagenet.provenance.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert made["git/commit"] == head and f"Commit {head[:10]}" in text


def test_bench_data_keeps_the_imagenet_section(tmp_path: Path) -> None:
    out = tmp_path / "data.md"
    assert kept_section(out) == ""
    out.write_text(f"old small-data table\n{SECTION}\n## ImageNet\nrows\n")
    assert kept_section(out) == f"\n{SECTION}\n## ImageNet\nrows\n"
