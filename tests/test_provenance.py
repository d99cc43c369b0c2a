"""Provenance of an output: the commit, the exact difference of the tree from it, the machine, the software."""

import hashlib
import json
import subprocess
from pathlib import Path

from src import environment, provenance


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_a_dirty_tree_is_recorded_with_its_diff_and_a_clean_one_without(tmp_path: Path) -> None:
    repo, out = tmp_path / "repo", tmp_path / "out"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("lr = 0.1\n")
    (repo / ".gitignore").write_text("runs/\n")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()

    clean = provenance.write(out, ["cmd"], cwd=repo)
    assert (clean["git/commit"], clean["git/dirty"], clean["git/diff_sha256"]) == (head, False, None)
    assert not (out / "provenance.diff").exists()

    (repo / "train.py").write_text("lr = 0.2\n")  # a tracked change
    (repo / "new_stage.py").write_text("STEPS = 3\n")  # a new file, not yet added
    (repo / "runs").mkdir()
    (repo / "runs" / "big.ckpt").write_text("ignored")
    dirty = provenance.write(out, ["cmd"], cwd=repo)
    diff = (out / "provenance.diff").read_bytes()
    assert dirty["git/dirty"] is True and dirty["diff_file"] == "provenance.diff"
    assert dirty["git/diff_sha256"] == hashlib.sha256(diff).hexdigest()[:16]
    assert b"-lr = 0.1\n+lr = 0.2" in diff and b"+STEPS = 3" in diff and b"big.ckpt" not in diff
    # the patch recreates the dirty tree from the commit
    git(repo, "stash", "-q", "--include-untracked")
    git(repo, "apply", str(out / "provenance.diff"))
    assert (repo / "train.py").read_text() == "lr = 0.2\n" and (repo / "new_stage.py").read_text() == "STEPS = 3\n"

    saved = json.loads((out / "provenance.json").read_text())
    assert saved["command"] == "cmd" and saved["machine"]["cores"] > 0 and saved["machine"]["cpu"]
    assert saved["environment"]["env/packages"] == environment.facts()["env/packages"]
    assert f"Commit {head[:10]} + uncommitted changes (diff sha256 {dirty['git/diff_sha256']}" in provenance.summary(
        dirty
    )

    git(repo, "stash", "-q", "--include-untracked")  # clean again: the stale diff goes
    provenance.write(out, ["cmd"], cwd=repo)
    assert not (out / "provenance.diff").exists()


def test_outside_a_checkout_nothing_is_claimed(tmp_path: Path) -> None:
    rec = provenance.write(tmp_path, ["cmd"], cwd=tmp_path)
    assert (rec["git/commit"], rec["git/dirty"], rec["git/diff_sha256"]) == (None, None, None)
    assert provenance.git_state(tmp_path) == {"git/commit": None, "git/dirty": None}
    assert "no git checkout" in provenance.summary(rec)
