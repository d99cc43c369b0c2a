"""scripts/setup.sh as a user runs it: a project virtualenv, never pip into an externally managed Python.

CI's own setup (.ci/run, as root, from Debian's python3: PEP 668) makes the .venv these tests run in.
Here setup.sh runs again as an unprivileged user on a copy of the checkout.
"""

import os
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from src import environment
from tests.conftest import REPO, require

NOBODY = 65534


def require_root() -> None:
    tools = [t for t in ("setpriv", "unshare", "mount") if not shutil.which(t)]
    require("runs setup.sh as another user: run the tests as root" if os.geteuid() else None)
    require(f"runs setup.sh as another user: needs {', '.join(tools)} (util-linux, mount)" if tools else None)


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


def reachable(paths: list[Path], stash: Path) -> list[str]:
    """A command prefix: what follows runs in a private mount namespace where any user can reach ``paths``
    (this .venv and its Python, which a checkout or pyenv may put under /root, mode 700). There, the outermost
    directory above a path that others cannot enter is covered by a tmpfs that holds only the paths under it
    (bind mounts, through ``stash``); nothing changes outside the namespace."""
    covered: dict[Path, Path] = {}  # path -> its outermost directory closed to others
    for path in paths:
        closed = [d for d in reversed(path.parents) if not d.stat().st_mode & stat.S_IXOTH]
        if closed:
            covered[path] = closed[0]
    q = shlex.quote
    script = ["set -e"]
    for i, path in enumerate(covered):
        script += [f"mkdir -p {q(str(stash))}/{i}", f"mount --bind {q(str(path))} {q(str(stash))}/{i}"]
    script += [f"mount -t tmpfs -o mode=755 tmpfs {q(str(d))}" for d in sorted(set(covered.values()))]
    for i, path in enumerate(covered):
        script += [f"mkdir -p {q(str(path))}", f"mount --bind {q(str(stash))}/{i} {q(str(path))}"]
    return ["unshare", "--mount", "sh", "-c", "\n".join([*script, 'exec "$@"']), "sh"]


@pytest.mark.slow
def test_setup_as_a_user_reuses_the_torch_of_the_python_it_starts_from(user_dir: Path) -> None:
    """README's setup as a new user whose python3 already has torch (here: this test's locked .venv, itself
    made from Debian's python3): setup.sh makes .venv, keeps that torch, installs the lock, and the project runs."""
    require_root()
    require("needs the locked environment to start from: bash scripts/setup.sh --dev" if environment.check() else None)
    venv_here = Path(sys.prefix).resolve()  # the .venv may be a link (a git worktree's)
    python = venv_here / "bin" / "python"
    # Run by the user wherever this .venv and its Python lie (a checkout or pyenv under /root).
    view = reachable([Path(sys.base_prefix).resolve(), venv_here], user_dir / ".mounts")
    runs = subprocess.run([*view, *as_user(NOBODY, user_dir, [str(python), "-c", "import torch"])], capture_output=True)
    assert runs.returncode == 0, f"user {NOBODY} cannot run {python}: {runs.stderr.decode()[-2000:]}"
    checkout = checkout_for(user_dir, NOBODY)
    setup = subprocess.run([*view, *as_user(NOBODY, user_dir, ["bash", "scripts/setup.sh"], PYTHON=str(python))],
                           cwd=checkout, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    torch_dir = venv_here / Path(sysconfig.get_paths()["purelib"]).relative_to(sys.prefix) / "torch"
    assert f"setup.sh: keeping the torch at {torch_dir}" in setup.stdout, setup.stdout
    assert setup.stdout.splitlines()[-1].startswith("setup.sh: ready: .venv/bin/python")
    venv = checkout / ".venv"
    assert (venv / "pyvenv.cfg").stat().st_uid == NOBODY and "include-system-site-packages = true" in (
        venv / "pyvenv.cfg"
    ).read_text()
    # The new .venv runs the project on the same packages as this one: same digest, nothing off the lock.
    facts = subprocess.run([*view, *as_user(NOBODY, user_dir, [str(venv / "bin/python"), "-m", "src.environment"])],
                           cwd=checkout, capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    # Both sides from a fresh process in the checkout: the pytest process's cached facts() may date from an
    # earlier test's sys.path or working directory.
    here = subprocess.run([str(python), "-m", "src.environment"], cwd=checkout, capture_output=True, text=True,
                          timeout=300, check=True).stdout  # fmt: skip
    packages = next(line for line in here.splitlines() if line.startswith("env/packages: "))
    assert packages in facts and "env/off_lock: []" in facts, f"this .venv:\n{here}\nthe user's .venv:\n{facts}"
    # Once set up, setup.sh reuses .venv.
    again = subprocess.run([*view, *as_user(NOBODY, user_dir, ["bash", "scripts/setup.sh"], PYTHON=str(python))],
                           cwd=checkout, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert again.returncode == 0 and again.stdout.startswith("setup.sh: using .venv (Python"), again.stderr


def test_setup_as_a_user_without_debians_venv_package_says_what_to_install(user_dir: Path) -> None:
    """Debian's python3 without python3.X-venv (no ensurepip) cannot make a venv; a user cannot apt-get it."""
    require_root()
    python = Path("/usr/bin/python3")
    require(None if python.exists() else "needs Debian's /usr/bin/python3: apt-get install python3")
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
    ensurepip = Path(f"/usr/lib/python{version}/ensurepip")
    require(None if ensurepip.is_dir() else f"needs {ensurepip}: apt-get install python{version}-venv")
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
