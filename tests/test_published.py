"""The results pages publish only what the raw files committed beside them hold (scripts/published.py)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from scripts import published

RESULT_PAGES = ("benchmarks/gpu.md", "benchmarks/host.md", "docs/results.md")


def test_every_generated_table_matches_its_raw_files() -> None:
    for page in published.PAGES:
        text = (published.REPO / page).read_text()
        _, changed = published.regenerate(text, page)
        assert changed == [], f"{page}: tables differ from their raw files (run python -m scripts.published): {changed}"


@pytest.mark.parametrize("page", RESULT_PAGES)
def test_results_pages_hold_no_hand_written_table(page: str) -> None:
    """A table outside a generated block would be a figure no test checks; only the corrections list is prose."""
    text = published.BLOCK.sub("", (published.REPO / page).read_text())
    section, loose = "", []
    for line in text.splitlines():
        if line.startswith("#"):
            section = line
        elif line.startswith("|") and "Corrections" not in section:
            loose.append(f"{section}: {line}")
    assert loose == []
    assert len(published.BLOCK.findall((published.REPO / page).read_text())) >= 3


def test_a_number_changed_in_a_page_is_caught_and_named() -> None:
    page = "benchmarks/gpu.md"
    text = (published.REPO / page).read_text()
    edited = text.replace(
        "| ours Lightning fit | 3,734 (3,725-3,826) | 5 |", "| ours Lightning fit | 3,800 (3,725-3,826) | 5 |"
    )
    assert edited != text
    new, changed = published.regenerate(edited, page)
    assert changed == ["throughput benchmarks/gpu/2026-11-26-run1/results.json"]
    assert new == text  # rewriting restores the raw file's number


def test_a_changed_raw_file_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check reads the raw file itself: another test error there makes exactly the tables built on it stale."""
    page = "docs/results.md"
    text = (published.REPO / page).read_text()
    repo = tmp_path / "repo"
    for match in published.BLOCK.finditer(text):
        for path in match["spec"].split()[1:]:
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(published.REPO / path, repo / path)
    raw = "benchmarks/gpu/2026-11-26-run3/results.json"
    results = json.loads((repo / raw).read_text())
    results["repro"]["data"]["runs"]["plain56-s0"]["test_err"] = 30.0
    (repo / raw).write_text(json.dumps(results))
    monkeypatch.setattr(published, "REPO", repo)
    _, changed = published.regenerate(text, page)
    assert changed == [f"repro_depths {raw}"]  # repro_units does not hold plain-56


def test_bad_markers_are_named() -> None:
    with pytest.raises(ValueError, match="unknown renderer 'nonesuch'"):
        published.regenerate("<!-- generated: nonesuch x.json -->\n<!-- end generated -->", "page.md")
    with pytest.raises(FileNotFoundError, match="missing raw file"):
        published.regenerate("<!-- generated: smoke no/such/results.json -->\n<!-- end generated -->", "page.md")


def test_check_mode_exits_1_and_names_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    repo = tmp_path / "repo"
    raw = "benchmarks/gpu/2026-11-26-run1/results.json"
    (repo / raw).parent.mkdir(parents=True)
    shutil.copy(published.REPO / raw, repo / raw)
    (repo / "page.md").write_text(f"# Smoke\n\n<!-- generated: smoke {raw} -->\n| stale |\n<!-- end generated -->\n")
    monkeypatch.setattr(published, "REPO", repo)
    assert published.main(["page.md", "--check"]) == 1
    assert f"differs from its raw files: page.md: smoke {raw}" in capsys.readouterr().out
    assert published.main(["page.md"]) == 0  # rewrites it
    assert published.main(["page.md", "--check"]) == 0
    assert re.search(r"\| predict 10-crop \| pass \| 39 \|", (repo / "page.md").read_text())


def test_readmes_quickstart_ending_is_the_recorded_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's quickstart accuracy and training time come from the run's console, metrics.csv and hparams."""
    text = (published.REPO / "README.md").read_text()
    spec = next(m["spec"] for m in published.BLOCK.finditer(text) if m["spec"].startswith("quickstart "))
    repo = tmp_path / "repo"
    for path in (p for m in published.BLOCK.finditer(text) for p in m["spec"].split()[1:]):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(published.REPO / path, repo / path)
    monkeypatch.setattr(published, "REPO", repo)
    console = repo / spec.split()[1]
    recorded = re.search(r"Test top-1 accuracy (\d+\.\d+)%", console.read_text())
    assert recorded and f"Test top-1 accuracy {recorded[1]}%" in text
    console.write_text(console.read_text().replace(f"accuracy {recorded[1]}%", "accuracy 99.99%"))
    new, changed = published.regenerate(text, "README.md")
    assert changed == [spec] and "Test top-1 accuracy 99.99%" in new
    console.write_text("no accuracy line: the run failed\n")
    with pytest.raises(ValueError, match="expected one test-accuracy line"):
        published.regenerate(text, "README.md")
