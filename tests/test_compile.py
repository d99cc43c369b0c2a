"""torch.compile options: a compile cache that a second process reuses, and CUDA-graph modes refused off CUDA."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from src.cli import main
from src.models.classifier import ImageClassifier
from src.models.resnet import ResNet
from tests.conftest import REPO, require
from tests.fault_injection import write_tiny_config


def tiny_net() -> ResNet:
    return ResNet(depths=[1], widths=[8], stem="cifar", num_classes=10)


def test_compile_mode_without_compile_is_refused() -> None:
    with pytest.raises(ValueError, match=r"compile_mode='reduce-overhead' applies to a compiled network"):
        ImageClassifier(tiny_net(), compile_mode="reduce-overhead")


def test_cuda_graphs_on_a_cpu_run_are_a_one_line_config_error(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = str(write_tiny_config(in_tmp / "tiny.yaml", max_steps=2))
    args = ["fit", "-c", config, "--run_dir=run", "--model.compile=true", "--model.compile_mode=reduce-overhead"]
    with pytest.raises(SystemExit) as err:
        main([*args, "--trainer.accelerator=cpu"])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: model.compile_mode='reduce-overhead' captures CUDA graphs") and "cpu" in message
    assert "Traceback" not in message and not (in_tmp / "run" / "checkpoints").exists()


def probe(root: Path) -> dict:
    """One fresh process's compiled fit (2 steps) with its default cache, ``<root>/compile_cache``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    cmd = [sys.executable, "scripts/bench_host.py", "--compile-probe", str(root), "--shapes", "tiny"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=1200)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_reuses_the_compiled_artefacts_of_the_first(tmp_path: Path) -> None:
    require(None if shutil.which("g++") else "g++ is not installed: inductor's CPU backend compiles C++ with it")
    cold = probe(tmp_path)
    assert cold["counters"].get("fxgraph_cache_miss", 0) > 0 and not cold["counters"].get("fxgraph_cache_hit")
    cache = tmp_path / "compile_cache"
    assert cache.is_dir() and any(cache.rglob("*.py"))  # the generated code, in the run directory
    warm = probe(tmp_path)  # a requeued segment: same run directory, fresh process
    assert warm["counters"].get("fxgraph_cache_hit", 0) == cold["counters"]["fxgraph_cache_miss"]
    assert not warm["counters"].get("fxgraph_cache_miss") and warm["counters"].get("autograd_cache_hit", 0) > 0
