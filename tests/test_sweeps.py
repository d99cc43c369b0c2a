"""Sweeps: a W&B sweep's command as the agent builds it (offline, up to the network boundary), and the
local grid launcher with GPUs handed out round-robin."""

import json
import subprocess
import sys
from pathlib import Path

import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from scripts import sweep
from tests.conftest import REPO
from tests.fault_injection import write_tiny_config


def agent_command(config: dict, run_args: dict) -> list[str]:
    """The command ``wandb agent`` runs for one sweep run: its macros replaced as the agent does
    (wandb's ``create_sweep_command_args``: ``${args}`` is ``--key=value`` per parameter)."""
    macros = create_sweep_command_args({"args": run_args})
    macros |= {"env": ["/usr/bin/env"], "interpreter": [sys.executable], "program": [config["program"]]}
    out: list[str] = []
    for chunk in config["command"]:
        out += macros[chunk[2:-1]] if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return out


def test_the_wandb_sweep_command_is_an_ordinary_cli_override() -> None:
    config = yaml.safe_load((REPO / "configs/sweeps/quickstart_lr_wd.yaml").read_text())
    grid = [(lr, wd) for lr in config["parameters"]["model.lr"]["values"]
            for wd in config["parameters"]["model.weight_decay"]["values"]]  # fmt: skip
    assert config["method"] == "grid" and len(grid) == 6 and config["metric"]["name"] == "val/err1"
    lr, wd = grid[-1]
    command = agent_command(config, {"model.lr": {"value": lr}, "model.weight_decay": {"value": wd}})
    assert command[-2:] == [f"--model.lr={lr}", f"--model.weight_decay={wd}"]
    # What the CLI makes of it, without training: the swept values in the resolved config.
    out = subprocess.run([*command, "--print_config"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    model = yaml.safe_load(out.stdout)["model"]
    assert (model["lr"], model["weight_decay"]) == (lr, wd)


def test_local_grid_runs_every_point_with_its_own_gpu_and_seed(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path / "tiny.yaml", max_steps=2)
    record = json.dumps({"class_path": "tests.ddp_helpers.RecordEnv",
                         "init_args": {"out_dir": str(tmp_path / "env"), "key": "CUDA_VISIBLE_DEVICES"}})  # fmt: skip
    results = sweep.main([
        "-c", str(config), "--grid", "model.lr=0.05,0.02", "--seeds", "2", "--jobs", "2", "--gpus", "3,5",
        "--name", "g", "--log-dir", str(tmp_path / "logs"), "--",
        f"--trainer.default_root_dir={tmp_path / 'runs'}", f"--trainer.callbacks+={record}",
    ])  # fmt: skip
    names = ["g-lr0.05-seed0", "g-lr0.05-seed1", "g-lr0.02-seed0", "g-lr0.02-seed1"]
    assert [(name, rc) for name, rc, _ in results] == [(n, 0) for n in names]
    assert {gpu for _, _, gpu in results} == {"3", "5"}
    for name, _, gpu in results:  # the process saw the GPU it was handed, and trained its point
        assert (tmp_path / "env" / f"{name}.txt").read_text() == gpu
        run_config = yaml.safe_load((tmp_path / "runs" / name / "version_0" / "config.yaml").read_text())
        assert run_config["model"]["lr"] == float(name.split("-")[1][2:])
        assert run_config["seed_everything"] == int(name[-1]) and run_config["wandb"]["group"] == "g"
    batch = json.loads((tmp_path / "logs" / "provenance.json").read_text())  # the grid's provenance, once
    assert batch["git/commit"] and batch["command"] and batch["environment"]["versions/torch"]
