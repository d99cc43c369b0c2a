"""The lock matches pyproject.toml, and an environment that is not the locked one is named as such."""

import hashlib
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
import tomllib
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from src import environment
from tests.conftest import REPO, require

REFRESH = "refresh the lock: .venv/bin/python scripts/lock.py"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# The universal lock covers these; CI installs and tests it on the first (Debian 12's Python 3.11, Linux x86_64).
TARGETS = [
    {"python_version": v, "python_full_version": f"{v}.0", "sys_platform": plat, "platform_system": system,
     "platform_machine": machine, "platform_python_implementation": "CPython", "implementation_name": "cpython"}
    for v, (plat, system, machine) in itertools.product(
        ["3.11", "3.10", "3.12", "3.13"],
        [("linux", "Linux", "x86_64"), ("linux", "Linux", "aarch64"), ("darwin", "Darwin", "arm64"),
         ("win32", "Windows", "AMD64")],
    )
]  # fmt: skip


def marker_env(target: dict[str, str]) -> dict[str, str]:
    """This interpreter's marker environment with ``target``'s keys replaced."""
    # Environment is a TypedDict whose fields are all str; mypy reads any TypedDict as Mapping[str, object].
    return {**cast(dict[str, str], default_environment()), **target}


def lock_entries() -> list[tuple[Path, Requirement]]:
    return [(path, req) for path in environment.LOCK_FILES for req in environment.lock_requirements(path)]


def pinned(target: dict[str, str]) -> dict[str, list[str]]:
    """{name: [locked versions]} of the lock entries whose markers hold on ``target``."""
    env = marker_env(target)
    out: dict[str, list[str]] = {}
    for _, req in lock_entries():
        if req.marker is None or req.marker.evaluate(env):
            out.setdefault(canonicalize_name(req.name), []).append(environment.locked_version(req))
    return out


@pytest.mark.parametrize(
    "target", TARGETS, ids=lambda t: f"py{t['python_version']}-{t['sys_platform']}-{t['platform_machine']}"
)
def test_every_pyproject_requirement_is_locked_inside_its_range(target: dict[str, str]) -> None:
    """Every dependency and extra in pyproject.toml has exactly one pin here, inside its range (no network)."""
    locked = pinned(target)
    env = marker_env({**target, "extra": ""})
    requirements = [*PYPROJECT["dependencies"], *itertools.chain(*PYPROJECT["optional-dependencies"].values())]
    for req in map(Requirement, requirements):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        versions = locked.get(canonicalize_name(req.name), [])
        where = f"Python {target['python_version']} on {target['sys_platform']}/{target['platform_machine']}"
        assert len(versions) == 1, f"{req.name} has {len(versions)} pins for {where}; {REFRESH}"
        assert req.specifier.contains(versions[0], prereleases=True), (
            f"the lock pins {req.name}=={versions[0]}, outside pyproject's {req}; {REFRESH}"
        )
    assert all(len(v) == 1 for v in locked.values()), {k: v for k, v in locked.items() if len(v) > 1}


def test_lock_files_split_at_the_torch_stack_hash_every_pin_and_pin_requirements_torch_in() -> None:
    for path in environment.LOCK_FILES:
        # An entry is a 'name==version ; marker \\' line, then its indented --hash and '# via' lines.
        entries = re.split(r"^(?=[a-z0-9])", path.read_text(), flags=re.M)[1:]
        assert entries, f"{path.name} has no entries"
        for entry in entries:
            req = Requirement(entry.splitlines()[0].rstrip("\\ "))
            assert "--hash=sha256:" in entry, f"{req} has no hash in {path.name}"
            stack = path.name == "requirements.torch.txt"
            assert environment.is_torch_stack(canonicalize_name(req.name)) == stack, f"{req.name} is in {path.name}"
    pins = [
        Requirement(line) for line in (REPO / "requirements.torch.in").read_text().splitlines() if line[:1].isalpha()
    ]
    torch_lock = {
        r.name: environment.locked_version(r) for r in environment.lock_requirements(environment.LOCK_FILES[1])
    }
    assert {r.name: str(r.specifier) for r in pins} == {n: f"=={torch_lock[n]}" for n in ("torch", "torchvision")}
    setup = (REPO / "scripts" / "setup.sh").read_text()
    for name in ("requirements.lock.txt", "requirements.torch.txt"):
        assert f"--require-hashes --no-deps -r {name}" in setup


def test_this_test_environment_is_the_locked_one() -> None:
    """What setup.sh checks last: here, in CI's fresh .venv, nothing is off the lock and nothing unmet."""
    in_venv = Path(sys.prefix).resolve() == (REPO / ".venv").resolve()
    require(None if in_venv else f"not the project's .venv (sys.prefix {sys.prefix}): bash scripts/setup.sh --dev")
    assert environment.check() == []
    facts = environment.facts()
    assert facts["env/off_lock"] == [] and facts["env/lock"] == lock_digest()


def lock_digest() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in environment.LOCK_FILES)).hexdigest()[:16]


def shadow(site: Path, name: str, version: str) -> Path:
    """Installs the metadata of ``name`` ``version`` (a dist-info, no code) in ``site``, which goes first on
    sys.path: importlib.metadata, pip and this project then see that version, as after a reinstall."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return site


def test_a_package_off_the_lock_is_named_by_the_check_and_in_the_facts(tmp_path: Path) -> None:
    """The real CLI in a real interpreter, with one runtime dependency (tqdm, via lightning) at another version."""
    site = shadow(tmp_path / "site", "tqdm", "4.0.0")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    check = subprocess.run([sys.executable, "-m", "src.environment", "--check"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode == 1
    locked = environment.locked_here()["tqdm"]
    assert f"environment: locked package tqdm 4.0.0 (lock {locked})" in check.stderr
    assert "is required but tqdm 4.0.0 is installed" in check.stderr  # lightning's tqdm>=... is unmet
    facts = subprocess.run([sys.executable, "-m", "src.environment"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
    assert f"tqdm 4.0.0 (lock {locked})" in facts
    here = environment.facts()
    assert f"env/packages: {here['env/packages']}" not in facts  # another environment, another digest
    assert f"env/lock: {lock_digest()}" in facts and f"versions/torch: {here['versions/torch']}" in facts


def test_pre_commit_runs_the_locked_ruff() -> None:
    """pre-commit's ruff hook and CI (.ci/run: the .venv's ruff, from the lock) must lint alike."""
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    (hook,) = [r for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    (ruff,) = {environment.locked_version(req) for _, req in lock_entries() if canonicalize_name(req.name) == "ruff"}
    assert hook["rev"] == f"v{ruff}", f"set rev: v{ruff} in .pre-commit-config.yaml"
