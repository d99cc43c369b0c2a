"""Refresh the lock from pyproject.toml's ranges: ``.venv/bin/python scripts/lock.py`` (needs PyPI).

Writes two hashed requirement files from one universal resolution (every OS, Python >= 3.10):

- ``requirements.lock.txt``: every dependency, runtime and all extras (dev, report), except the torch stack;
- ``requirements.torch.txt``: the torch stack (torch, torchvision and their CUDA wheels: nvidia-*, cuda-*,
  triton) at the versions ``requirements.torch.in`` names. ``scripts/setup.sh`` installs it only where no
  torch is importable, so a cluster's own CUDA build of torch is kept.

Why uv (``uv pip compile``): it resolves for all platforms and Python versions at once (``--universal``),
so the GPU machine's Python 3.12 gets locked pins too, in seconds; its output is a plain requirements file
with hashes, installed by plain ``pip install --require-hashes``, so a fresh machine needs no uv (only
this refresh does: uv is in the dev extra, hence locked too). pip-tools resolves for the running
interpreter only and follows pip's internals; ``uv lock``'s uv.lock would need uv on every machine.
"""

import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the lock has tomli on Python 3.10 (pytest and mypy need it)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LOCK, TORCH_LOCK, TORCH_PINS = REPO / "requirements.lock.txt", REPO / "requirements.torch.txt", "requirements.torch.in"
COMMAND = ".venv/bin/python scripts/lock.py"


def is_torch_stack(name: str) -> bool:
    """torch, torchvision and the CUDA-specific wheels they pull in (a cluster brings its own)."""
    return name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-"))


def compile_lock(uv: str, out: Path, no_emit: list[str], before: str) -> str:
    # uv's universal resolution starts at the running Python unless told: start at pyproject's floor.
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = re.fullmatch(r">=\s*(3\.\d+)", requires)
    if not floor:
        sys.exit(f"lock.py: expected requires-python '>=3.N' in pyproject.toml, found {requires!r}")
    cmd = [uv, "pip", "compile", "pyproject.toml", "--all-extras", "--universal", "--python-version", floor[1],
           "--generate-hashes", "--constraints", TORCH_PINS, "--exclude-newer", before,
           "--custom-compile-command", COMMAND, "--quiet", "--output-file", str(out)]  # fmt: skip
    for name in no_emit:
        cmd += ["--no-emit-package", name]
    subprocess.run(cmd, cwd=REPO, check=True)
    return out.read_text()


def main() -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not uv:
        sys.exit("lock.py: uv not found; it comes with the dev extra: bash scripts/setup.sh --dev")
    # Three resolutions of the same inputs see the index as it was at one instant, so they pin the same versions.
    before = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # The first names every package; the other two emit the two halves of it.
    full = compile_lock(uv, LOCK, [], before)
    names = re.findall(r"^([a-z0-9][a-z0-9._-]*)==", full, flags=re.M)
    stack = sorted({n for n in names if is_torch_stack(n)})
    compile_lock(uv, LOCK, stack, before)
    compile_lock(uv, TORCH_LOCK, sorted(set(names) - set(stack)), before)
    print(f"wrote {LOCK.name} and {TORCH_LOCK.name} ({len(set(names))} packages, torch stack: {', '.join(stack)})")


if __name__ == "__main__":
    main()
