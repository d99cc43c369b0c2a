"""scripts/setup.sh as a user runs it: a project virtualenv, never pip into an externally managed Python.

CI's own setup (.ci/run, as root, from Debian's python3: PEP 668) makes the .venv these tests run in.
Here setup.sh runs again as an unprivileged user on a copy of the checkout.
"""

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from src import environment
from tests.conftest import REPO

NOBODY = 65534
as_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="runs setup.sh as another user: needs root and setpriv"
)


@pytest.fixture
def user_dir() -> Iterator[Path]:
    """A directory the user owns (pytest's tmp_path lies under a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="setup-test-"))
    os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path)


def checkout_for(tmp_path: Path, uid: int) -> Path:
    """The working tree's files (tracked and new, not ignored) in a directory ``uid`` owns, as a clone has them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    dest = tmp_path / "checkout"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.chown(path, uid, uid)
    return dest


def as_user(uid: int, home: Path, command: list[str], **env: str) -> list[str]:
    """``command`` as ``uid`` with a bare environment: its own HOME (pip's cache), no root's settings."""
    variables = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **env}
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "env", "-i",
            *(f"{k}={v}" for k, v in variables.items()), *command]  # fmt: skip


@pytest.mark.slow
@as_root
def test_setup_as_a_user_reuses_the_torch_of_the_python_it_starts_from(user_dir: Path) -> None:
    """README's setup as a new user whose python3 already has torch (here: this test's locked .venv, itself
    made from Debian's python3): setup.sh makes .venv, keeps that torch, installs the lock, and the project runs."""
    if environment.check():
        pytest.skip("needs the locked environment to start from: bash scripts/setup.sh --dev")
    if subprocess.run(as_user(NOBODY, user_dir, [sys.executable, "-c", ""]), capture_output=True).returncode:
        pytest.skip(f"user {NOBODY} cannot run {sys.executable} (a .venv made from a Python under /root?)")
    checkout = checkout_for(user_dir, NOBODY)
    setup = subprocess.run(as_user(NOBODY, user_dir, ["bash", "scripts/setup.sh"], PYTHON=sys.executable),
                           cwd=checkout, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    torch_dir = Path(sysconfig.get_paths()["purelib"]) / "torch"
    assert f"setup.sh: keeping the torch at {torch_dir}" in setup.stdout
    assert setup.stdout.splitlines()[-1].startswith("setup.sh: ready: .venv/bin/python")
    venv = checkout / ".venv"
    assert (venv / "pyvenv.cfg").stat().st_uid == NOBODY and "include-system-site-packages = true" in (
        venv / "pyvenv.cfg"
    ).read_text()
    # The new .venv runs the project on the same packages as this one: same digest, nothing off the lock.
    facts = subprocess.run(as_user(NOBODY, user_dir, [str(venv / "bin/python"), "-m", "src.environment"]),
                           cwd=checkout, capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    here = environment.facts()
    assert f"env/packages: {here['env/packages']}" in facts and "env/off_lock: []" in facts
    # Once set up, setup.sh reuses .venv.
    again = subprocess.run(as_user(NOBODY, user_dir, ["bash", "scripts/setup.sh"], PYTHON=sys.executable),
                           cwd=checkout, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert again.returncode == 0 and again.stdout.startswith("setup.sh: using .venv (Python"), again.stderr


@as_root
@pytest.mark.skipif(not shutil.which("unshare"), reason="hides ensurepip in a mount namespace: needs unshare")
def test_setup_as_a_user_without_debians_venv_package_says_what_to_install(user_dir: Path) -> None:
    """Debian's python3 without python3.X-venv (no ensurepip) cannot make a venv; a user cannot apt-get it."""
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("needs Debian's /usr/bin/python3")
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
    ensurepip = Path(f"/usr/lib/python{version}/ensurepip")
    if not ensurepip.is_dir():
        pytest.skip(f"needs Debian's python3 with its venv package ({ensurepip})")
    checkout = checkout_for(user_dir, NOBODY)
    (user_dir / "empty").mkdir()
    setup = as_user(NOBODY, user_dir, ["bash", "scripts/setup.sh"], PYTHON=str(python))
    # In a private mount namespace, an empty directory over ensurepip: as if the package were not installed.
    hide = f"mount --bind {user_dir / 'empty'} {ensurepip} && exec {shlex.join(setup)}"
    result = subprocess.run(["unshare", "--mount", "sh", "-c", hide], cwd=checkout, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 1
    assert (
        f"setup.sh: error: {python} ({version}) cannot make a virtualenv: its venv/ensurepip module is missing. "
        f"Debian/Ubuntu: ask an admin for `apt-get install python{version}-venv`" in result.stderr
    )
    assert not (checkout / ".venv").exists()
