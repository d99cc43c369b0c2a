#!/usr/bin/env bash
# Set up this project on a fresh machine: the data and system packages (Debian/Ubuntu, as root), then a
# project virtualenv .venv holding the locked dependencies and the project itself (editable).
#   bash scripts/setup.sh          # to train
#   bash scripts/setup.sh --dev    # also a local Slurm for the SLURM tests (CI)
# Then run .venv/bin/python (or `source .venv/bin/activate` and `python`).
# .venv is made from $PYTHON if set, else python3 on PATH (system, pyenv, conda, module: any >= 3.10). A
# virtualenv, because Debian/Ubuntu's python3 refuses pip installs (PEP 668, "externally-managed-environment").
# If that Python already imports torch and torchvision (a cluster's CUDA build), .venv uses them
# (--system-site-packages); otherwise it gets the locked torch (requirements.torch.txt).
# The lock: requirements.lock.txt + requirements.torch.txt, refreshed by `.venv/bin/python scripts/lock.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
die() {
    echo "setup.sh: error: $*" >&2
    exit 1
}

base=${PYTHON:-$(command -v python3 || command -v python || true)}
[[ -n $base ]] || die "no python3 on PATH: install Python >= 3.10 (Debian/Ubuntu: apt-get install python3-venv) or set PYTHON=/path/to/python"
pyver=$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "PYTHON=$base does not run"
"$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$base is Python $pyver; this project and its lock need Python >= 3.10 (set PYTHON=/path/to/python3.11)"
[[ $pyver == 3.11 ]] || echo "setup.sh: note: CI tests the lock on Python 3.11; this is $pyver (locked too, but untested)" >&2
venv_ok() { [[ -x .venv/bin/python ]] && .venv/bin/python -c '' 2>/dev/null; }

packages=(dataset-fashion-mnist) # official Fashion-MNIST idx files, offline
# iproute2: the multi-host test cluster; g++ and Python's headers: inductor compiles C++ on a CPU
# (tests/test_scale.py); python3-venv: tests/test_setup.py makes venvs from Debian's python3.
((dev)) && packages+=(slurmctld slurmd slurm-client munge iproute2 g++ python3-dev python3-venv)
# Debian/Ubuntu ship venv's ensurepip in a package of its own.
venv_ok || "$base" -c 'import venv; from ensurepip import bootstrap' 2>/dev/null || packages+=("python$pyver-venv")
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    if ((${#missing[@]})) && ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
        echo "setup.sh: error: apt-get could not install ${missing[*]}" >&2
        ((dev)) && exit 1 # CI/tests need them; for training alone, carry on (Fashion-MNIST downloads)
    fi
elif [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
    echo "setup.sh: note: not root on Debian; Fashion-MNIST will be downloaded into ./data on first use" >&2
fi

if venv_ok; then
    echo "setup.sh: using .venv ($(.venv/bin/python -V); rm -rf .venv to rebuild it from $base)"
else
    "$base" -c 'import venv; from ensurepip import bootstrap' 2>/dev/null ||
        die "$base ($pyver) cannot make a virtualenv: its venv/ensurepip module is missing. Debian/Ubuntu: ask an admin for \`apt-get install python$pyver-venv\` (or run this as root), or set PYTHON to another Python >= 3.10 (pyenv, conda)"
    rm -rf .venv
    if "$base" -c 'import torch, torchvision' 2>/dev/null; then
        echo "setup.sh: $base has torch $("$base" -c 'import torch; print(torch.__version__)'); .venv keeps it (--system-site-packages)"
        "$base" -m venv --system-site-packages .venv
        # A venv's system site is its base *interpreter's*: when $base is itself a virtualenv, add its packages too.
        if "$base" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
            site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
            "$base" -c 'import site; print(*site.getsitepackages(), sep="\n")' >"$site/base-venv.pth"
        fi
    else
        "$base" -m venv .venv
    fi
fi

py=.venv/bin/python
# Exactly the lock: every package pinned and hash-checked, nothing resolved here (--no-deps).
"$py" -m pip install -q --require-hashes --no-deps -r requirements.lock.txt
# The locked torch stack unless .venv sees another torch (from the Python it was made from): that one stays.
torch_at=$("$py" -c 'import sys, torch, torchvision; from pathlib import Path as P; t = P(torch.__file__).resolve()
print("" if t.is_relative_to(P(sys.prefix).resolve()) else t.parent)' 2>/dev/null || echo)
if [[ -z $torch_at ]]; then
    "$py" -m pip install -q --require-hashes --no-deps -r requirements.torch.txt
else
    echo "setup.sh: keeping the torch at $torch_at (runs record its versions)"
fi
# setuptools comes from the lock too, so the editable install downloads nothing (--no-build-isolation).
"$py" -m pip install -q --no-deps --no-build-isolation -e .
# Every locked package at its version and every requirement met; pip check too where .venv sees only itself.
"$py" -m src.environment --check >/dev/null
grep -q "include-system-site-packages = false" .venv/pyvenv.cfg && "$py" -m pip check >/dev/null
echo "setup.sh: ready: .venv/bin/python ($("$py" -V), torch $("$py" -c 'import torch; print(torch.__version__)')); or: source .venv/bin/activate"
