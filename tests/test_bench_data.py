"""scripts/bench_data.py runs end to end (--quick), so the loader benchmark cannot rot; no speed is asserted."""

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_bench_data_quick_writes_every_loader_and_recipe_with_spreads(tmp_path: Path) -> None:
    out = tmp_path / "data.md"
    subprocess.run([sys.executable, "scripts/bench_data.py", "--quick", "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    rows = [r for r in rows if "on_device, cuda" not in r]  # a GPU host adds those rows
    # data x recipe x (DataLoader with 0 and 1+ workers, on_device); Fashion-MNIST is installed here
    assert {(r.split(" | ")[0][2:], r.split(" | ")[1]) for r in rows} == {
        (d, rec) for d in ("CIFAR-shaped 3x32x32", "Fashion-MNIST 1x28x28") for rec in ("paper", "randaugment")
    }
    assert len(rows) == 12
    for row in rows:
        assert re.search(r"\| [\d,]+ \([\d,]+-[\d,]+\) \|", row), row  # median (min-max)
    ratios = [r for r in rows if "on_device, cpu" in r]
    ratio = re.compile(r"[\d.]+x \([\d.]+-[\d.]+\) vs \d+ workers, A/A ±[\d.]+%")
    assert len(ratios) == 4 and all(ratio.search(r) for r in ratios)
    # where the figures come from, beside them: commit, the diff when the tree was dirty, machine, software
    made = json.loads((tmp_path / "data.provenance.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert made["git/commit"] == head and made["machine"]["cores"] > 0
    assert (tmp_path / "data.provenance.diff").exists() == made["git/dirty"]
    assert f"Commit {head[:10]}" in out.read_text() and "data.provenance.json" in out.read_text()
