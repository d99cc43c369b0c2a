#!/usr/bin/env bash
# Set up this project on a fresh machine: the data and system packages (Debian/Ubuntu, as
# root), PyTorch when none is installed, then the project itself (editable).
#   bash scripts/setup.sh          # to train
#   bash scripts/setup.sh --dev    # also test/lint tools and a local Slurm for the SLURM tests
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

packages=(dataset-fashion-mnist)  # official Fashion-MNIST idx files, offline
((dev)) && packages+=(slurmctld slurmd slurm-client munge)
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }; then
        echo "error: apt-get could not install ${packages[*]}" >&2
        ((dev)) && exit 1 # CI/tests need them; for training alone, carry on (Fashion-MNIST downloads)
    fi
elif [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
    echo "note: not root on Debian; Fashion-MNIST will be downloaded into ./data on first use" >&2
fi

# Keep a CUDA build a cluster already has; otherwise the release these machines carry.
py=$(command -v python || command -v python3)
"$py" -c "import torch, torchvision" 2>/dev/null || "$py" -m pip install -q torch==2.14.1 torchvision==0.29.1
if ((dev)); then "$py" -m pip install -q -e '.[dev]'; else "$py" -m pip install -q -e .; fi
