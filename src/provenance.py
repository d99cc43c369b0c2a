"""Where a result came from: the code, the machine and the software, recorded the same way by every output.

``record()`` gathers it: the commit, whether the working tree differs from it (tracked changes and
untracked files git does not ignore) with a digest of that difference, the machine (CPU model, cores,
GPUs) and the environment (``src.environment.facts()`` plus torchvision). ``write(folder)`` puts it in
``folder/provenance.json`` and, when the tree was dirty, the difference itself in ``folder/provenance.diff``,
so that a figure can be traced to the exact code that made it. The campaign, the benchmarks, the
local runner (experiments and sweeps) and the report all call ``write``; a training run records the
``git/*`` facts of ``git_state()`` in its hyperparameters.

    python -m src.provenance            # prints the record of this checkout and machine
"""

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path = REPO) -> bytes | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # `git diff --no-index` exits 1 when the files differ: that is its answer, not a failure.
    return out.stdout if out.returncode in (0, 1) and not out.stderr.startswith(b"fatal") else None


def tree_diff(cwd: Path = REPO) -> bytes | None:
    """How the working tree differs from HEAD, as one patch: tracked changes (staged or not), then every
    untracked file git does not ignore as a new file. b'' for a clean tree; None outside a git checkout."""
    if _git("rev-parse", "HEAD", cwd=cwd) is None:
        return None
    patch = _git("diff", "--binary", "HEAD", cwd=cwd) or b""
    untracked = (_git("ls-files", "--others", "--exclude-standard", "-z", cwd=cwd) or b"").split(b"\0")
    for name in sorted(n.decode() for n in untracked if n):
        patch += _git("diff", "--binary", "--no-index", "--", os.devnull, name, cwd=cwd) or b""
    return patch


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def git_state(cwd: Path = REPO) -> dict[str, Any]:
    """Commit and whether the tree differs from it, untracked files included (the ``git/*`` facts a run
    records); None values outside a git checkout."""
    head = _git("rev-parse", "HEAD", cwd=cwd)
    status = _git("status", "--porcelain", cwd=cwd) if head else None
    return {
        "git/commit": head.decode().strip() if head else None,
        "git/dirty": None if status is None else bool(status),
    }


def cpu_name() -> str:
    try:  # platform.processor() is empty on Linux; the kernel knows the model name
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "host": platform.node(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpus": gpus or None,
        "load_average": round(os.getloadavg()[0], 2),
    }


def record(command: list[str] | None = None, cwd: Path = REPO) -> dict[str, Any]:
    """The provenance of an output made now, by ``command`` (default: this process's command line)."""
    import torchvision

    from src import environment

    diff = tree_diff(cwd)
    head = _git("rev-parse", "HEAD", cwd=cwd)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(command if command is not None else [Path(sys.executable).name, *sys.argv]),
        "git/commit": head.decode().strip() if head else None,
        "git/dirty": None if diff is None else bool(diff),
        "git/diff_sha256": digest(diff) if diff else None,
        "machine": machine(),
        "environment": {**environment.facts(), "versions/torchvision": torchvision.__version__},
        "_diff": diff,
    }


def write(folder: Path, command: list[str] | None = None, name: str = "provenance", cwd: Path = REPO) -> dict[str, Any]:
    """``record()`` into ``folder/<name>.json``, and the tree's difference into ``folder/<name>.diff`` when
    the tree was dirty (a stale diff of an earlier output is removed). Returns the record."""
    rec = record(command, cwd)
    diff = rec.pop("_diff")
    folder.mkdir(parents=True, exist_ok=True)
    patch = folder / f"{name}.diff"
    if diff:
        patch.write_bytes(diff)
        rec["diff_file"] = patch.name
    else:
        patch.unlink(missing_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(rec, indent=1, default=str) + "\n")
    return rec


def summary(rec: dict[str, Any]) -> str:
    """One Markdown line for the head of an output: code, machine, software."""
    commit = (rec.get("git/commit") or "")[:10] or "no git checkout"
    if rec.get("git/dirty"):
        commit += f" + uncommitted changes (diff sha256 {rec['git/diff_sha256']}, in {rec.get('diff_file')})"
    m, env = rec["machine"], rec["environment"]
    gpus = ", ".join(m["gpus"]) if m["gpus"] else "none"
    return (
        f"Commit {commit}; {m['cpu']}, {m['cores']} cores (load {m['load_average']}), GPU: {gpus}; "
        f"Python {env['versions/python']}, torch {env['versions/torch']} (CUDA {env['versions/cuda']}, cuDNN "
        f"{env['versions/cudnn']}), torchvision {env['versions/torchvision']}, lightning {env['versions/lightning']}; "
        f"{rec['date']}."
    )


if __name__ == "__main__":
    rec = record()
    rec.pop("_diff")
    print(json.dumps(rec, indent=1, default=str))
