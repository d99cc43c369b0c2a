"""Here: fill ``.travel/`` with what the GPU machine lacks. There: install it from the carried wheels.

The GPU machine's image has torch, lightning, torchmetrics, timm, rich, matplotlib, pyyaml and numpy; it
lacks jsonargparse with its ``signatures`` extras, and wandb. pip downloads them with every dependency
for Python 3.12; there pip installs only what is missing, without an index.
"""

import argparse
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from scripts.runner import REPO

WHEELS = ("jsonargparse", "docstring_parser", "typeshed_client", "wandb")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "any")
TRAVEL_LIMIT = 64 * 2**20  # the device tool's limit on the working tree, carried folders included


def prepare(args: argparse.Namespace) -> None:
    """Wheels for Python 3.12 (the GPU machine's) and Fashion-MNIST's official idx files into ``args.travel``."""
    wheels, data = args.travel / "wheels", args.travel / "fashion-mnist"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    pins = [f"{name}=={version(name)}" for name in WHEELS]  # the versions tested here
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.12"]
    cmd += ["--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(wheels), *pins]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    data.mkdir(parents=True, exist_ok=True)
    for f in sorted(args.fmnist.glob("*-ubyte*")):
        shutil.copy2(f, data / f.name)
    if len(list(data.glob("*-ubyte*"))) != 4:
        raise SystemExit(f"expected the 4 official Fashion-MNIST idx files in {args.fmnist}")
    tree = sum(p.stat().st_size for p in args.travel.rglob("*") if p.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tree += sum((REPO / p).stat().st_size for p in tracked.decode().split("\0") if p and (REPO / p).is_file())
    print(f"{args.travel}: {len(list(wheels.iterdir()))} wheels; travelling tree {tree / 2**20:.1f} MiB")
    if tree > TRAVEL_LIMIT:
        raise SystemExit(f"the travelling tree is {tree / 2**20:.1f} MiB, over the 64 MiB limit")


def install_wheels(wheels: Path, log: Path) -> str:
    """pip-installs what this Python lacks from the carried wheels (no index); returns a status line."""
    missing = []
    for module in WHEELS:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if not missing:
        return "all needed packages already installed"
    if not wheels.is_dir():
        return f"missing {', '.join(missing)} and no wheels at {wheels}"
    pins = [f"{n}=={w.name.split('-')[1]}" for n in WHEELS for w in wheels.glob(f"{n}-*.whl")]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels), *pins]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        return f"pip install failed (exit {proc.returncode}): {proc.stderr[-1500:]}"
    return f"installed {', '.join(pins)} from {wheels}"
