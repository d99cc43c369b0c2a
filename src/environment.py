"""The software a run ran on, and whether it is the locked one.

- The lock is ``requirements.lock.txt`` (everything but the torch stack) and ``requirements.torch.txt``
  (torch, torchvision and their CUDA wheels); ``scripts/lock.py`` writes both, ``scripts/setup.sh``
  installs them into ``.venv``, the torch stack only where no torch was importable already.
- ``facts()`` is what every run records (``RunFacts``): Python, torch, CUDA and cuDNN versions, a digest
  of the lock files, a digest of the installed packages the project runs on (its runtime dependencies,
  recursively), and those of them whose version is not the locked one.
- ``python -m src.environment`` prints the facts; ``--check`` (setup.sh's last step) exits 1 naming every
  locked package that is not installed at its version and every unmet requirement of the project.
"""

import argparse
import functools
import hashlib
import importlib.metadata as metadata
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK_FILES = (REPO / "requirements.lock.txt", REPO / "requirements.torch.txt")
PROJECT = "resnet-template"


def is_torch_stack(name: str) -> bool:
    """torch, torchvision and the CUDA-specific wheels they pull in (a cluster brings its own)."""
    return name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-"))


def lock_requirements(path: Path) -> list[Requirement]:
    """The ``name==version ; marker`` entries of a lock file, for every platform (hashes and comments dropped)."""
    entries = []
    for line in path.read_text().splitlines():
        if line[:1].isalnum():  # an entry; its --hash lines are indented, comments start with '#'
            entries.append(Requirement(line.rstrip("\\ ")))
    return entries


def locked_version(req: Requirement) -> str:
    (spec,) = req.specifier
    if spec.operator != "==":
        raise ValueError(f"lock entry {req} is not pinned with ==")
    return spec.version


def locked_here(paths: Iterable[Path] = LOCK_FILES) -> dict[str, str]:
    """{name: version} of the lock entries whose markers hold on this interpreter and platform."""
    return {
        canonicalize_name(req.name): locked_version(req)
        for path in paths
        for req in lock_requirements(path)
        if req.marker is None or req.marker.evaluate()
    }


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _holds(req: Requirement, extras: Iterable[str] = ()) -> bool:
    """Whether a dependency applies here, for a package installed with ``extras``."""
    return req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in ("", *extras))


def project_requirements(extras: Iterable[str] = ()) -> list[Requirement]:
    """The project's own dependencies (and those of ``extras``): pyproject.toml in a checkout, else its metadata."""
    try:
        import tomllib  # Python 3.11+

        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    except (ImportError, FileNotFoundError):
        requires = metadata.requires(PROJECT) or []  # raises PackageNotFoundError if neither is there
        return [req for req in map(Requirement, requires) if _holds(req, extras)]
    optional = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *(r for e in extras for r in optional[e])]]


def dependency_closure(roots: Iterable[Requirement]) -> dict[str, list[Requirement]]:
    """Every package ``roots`` need here, recursively through installed metadata: {name: the requirements on it}.

    A package that is not installed is kept (with the requirements on it) and not followed further.
    """
    needed: dict[str, list[Requirement]] = {}
    todo = [req for req in roots if _holds(req)]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        needed.setdefault(name, []).append(req)
        key = (name, tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [dep for dep in map(Requirement, requires) if _holds(dep, req.extras)]
    return needed


def unmet_requirements(closure: dict[str, list[Requirement]]) -> list[str]:
    """``pip check`` for one project's dependencies only (a venv that sees a base Python's packages sees
    many that are none of ours, and their conflicts are not ours either)."""
    problems = []
    for name, reqs in sorted(closure.items()):
        version = installed_version(name)
        for req in reqs:
            if version is None:
                problems.append(f"{req} is required but {name} is not installed")
            elif not req.specifier.contains(version, prereleases=True):
                problems.append(f"{req} is required but {name} {version} is installed")
    return problems


def off_lock(names: Iterable[str], locked: dict[str, str]) -> list[str]:
    """``name installed (lock version)`` for each package whose installed version is not the locked one."""
    out = []
    for name in sorted(names):
        version, want = installed_version(name), locked.get(name)
        if version != want:
            out.append(f"{name} {version or 'missing'} ({f'lock {want}' if want else 'not in the lock'})")
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def lock_digest(paths: Iterable[Path] = LOCK_FILES) -> str | None:
    """One digest of the lock files' bytes; None outside a checkout that has them."""
    try:
        return digest(b"".join(path.read_bytes() for path in paths))
    except FileNotFoundError:
        return None


@functools.cache
def facts() -> dict[str, Any]:
    """The environment facts a run records (the same all process long: computed once)."""
    import lightning
    import torch

    closure = dependency_closure(project_requirements())
    packages = {name: installed_version(name) for name in closure}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    lock = lock_digest()
    return {
        "versions/python": platform.python_version(),
        "versions/torch": str(torch.__version__),  # a TorchVersion is no plain YAML str
        "versions/cuda": torch.version.cuda,  # the CUDA torch was built with; None for a CPU-only build
        "versions/cudnn": cudnn,  # as torch.backends.cudnn.version() reports it, e.g. 92400 for 9.24.0
        "versions/lightning": lightning.__version__,
        "env/lock": lock,
        # name==version of every package the project runs on: equal digests, equal software
        "env/packages": digest("\n".join(f"{n}=={v}" for n, v in sorted(packages.items())).encode()),
        "env/off_lock": off_lock(packages, locked_here()) if lock else None,
    }


def check() -> list[str]:
    """Problems with this environment as setup.sh leaves it: locked packages at other versions, unmet requirements."""
    locked = locked_here(LOCK_FILES[:1])
    problems = [f"locked package {entry}" for entry in off_lock(locked, locked)]
    torch_spec = metadata.distribution("torch").locate_file("") if installed_version("torch") else None
    # The torch stack is ours only when it lives in this environment; a base Python's own build is kept.
    if torch_spec is None or Path(str(torch_spec)).resolve().is_relative_to(Path(sys.prefix).resolve()):
        stack = locked_here(LOCK_FILES[1:])
        problems += [f"locked package {entry}" for entry in off_lock(stack, stack)]
    if installed_version(PROJECT) is None:
        problems.append(f"{PROJECT} itself is not installed (pip install --no-deps -e .)")
    problems += unmet_requirements(dependency_closure(project_requirements(("dev", "report"))))
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 unless the environment is the locked one")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(f"environment: {problem}", file=sys.stderr)
        if problems:
            sys.exit(f"environment: {len(problems)} problem(s); rerun bash scripts/setup.sh (or rm -rf .venv first)")
    for key, value in facts().items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
