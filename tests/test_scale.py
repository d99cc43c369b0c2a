"""Scale: DDP through the real Trainer (gloo on CPU), mixed precision, channels_last, compile."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from src.data.synthetic import SyntheticDataModule
from src.models.classifier import ImageClassifier
from src.models.resnet import ResNet
from tests.conftest import REPO, require


def tiny_net() -> ResNet:
    return ResNet(depth=[1, 1], widths=[8, 16], stem="cifar", num_classes=10)


def run_config(tmp_path: Path, name: str, data_module: str, **data_args: int) -> Path:
    out = tmp_path / name
    cfg = {
        "name": name,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 8,
            "enable_progress_bar": False,
            "default_root_dir": str(tmp_path / "runs"),
            "callbacks": [{"class_path": "tests.ddp_helpers.DumpState", "init_args": {"out_dir": str(out)}}],
        },
        "model": {
            "net": {
                "class_path": "src.models.resnet.ResNet",
                "init_args": {"depth": [1, 1], "widths": [8, 16], "stem": "cifar"},
            },
            "lr": 0.1,
            "schedule": "constant",
        },
        "data": {
            "class_path": data_module,
            "init_args": {"num_classes": 10, "image_size": 16, "train_size": 64, "val_size": 32, **data_args},
        },
        "test_after_fit": False,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fit(config: Path, *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "src.cli", "fit", "-c", str(config), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    # Never strategy=ddp inside pytest (it relaunches argv): run the CLI as a user would.
    # Global batch 16 both ways: 2 ranks x 8, or 1 process accumulating the same two shards of 8
    # (SyncBatchNorm is GPU-only in torch, so on CPU BN statistics are per shard both ways).
    # Synthetic data has no augmentation randomness.
    fit(
        run_config(tmp_path, "ddp", "src.data.synthetic.SyntheticDataModule", batch_size=8),
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    )
    fit(
        run_config(tmp_path, "single", "tests.ddp_helpers.RankOrderedSynthetic", batch_size=8, world=2),
        "--trainer.devices=1",
        "--trainer.accumulate_grad_batches=2",
    )
    single = torch.load(tmp_path / "single" / "rank0.pt")
    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    m0, m1, m_single = (
        json.loads((tmp_path / p).read_text()) for p in ("ddp/rank0.json", "ddp/rank1.json", "single/rank0.json")
    )
    assert (m0["world_size"], m0["global_step"], m_single["global_step"]) == (2, 8, 8)

    start = tiny_net().state_dict()
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), f"{key} differs between ranks"
        if "running" in key or "num_batches" in key:
            continue  # DDP keeps rank 0's BN running statistics; one process averages both shards
        torch.testing.assert_close(value, single[key], rtol=1e-4, atol=1e-5, msg=f"{key}: DDP vs one process")
    assert not torch.allclose(rank0["layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])

    # metrics are all-reduced: both ranks log the value one process computes over the whole val set
    assert m0["val/acc1"] == m1["val/acc1"]
    model = ImageClassifier(tiny_net())
    model.net.load_state_dict(rank0)
    (one_process,) = trainer(tmp_path, limit_val_batches=1.0).validate(model, data(val_size=32), verbose=False)
    assert one_process["val/acc1"] == pytest.approx(m0["val/acc1"])
    assert one_process["val/err1"] == pytest.approx(m0["val/err1"])


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    args = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**args, **kwargs})


def data(**kwargs) -> SyntheticDataModule:
    return SyntheticDataModule(
        **{"num_classes": 10, "image_size": 16, "train_size": 48, "val_size": 16, "batch_size": 8, **kwargs}
    )


def test_bf16_mixed_and_channels_last_train(tmp_path: Path) -> None:
    model = ImageClassifier(tiny_net(), channels_last=True)
    net = model.net
    assert isinstance(net, ResNet)  # ImageClassifier keeps the module it was given (types it as nn.Module)
    assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen: list[torch.dtype] = []
    net.get_submodule("layer1").register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = net.fc.weight.detach().clone()
    t = trainer(tmp_path, precision="bf16-mixed")
    t.fit(model, data())
    assert t.global_step == 3 and torch.bfloat16 in seen
    assert net.fc.weight.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(net.fc.weight, before)
    assert torch.isfinite(t.callback_metrics["train/loss"])


def test_16_mixed_on_cpu_falls_back_to_bf16(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="bf16"):
        t = trainer(tmp_path, precision="16-mixed")
    assert t.precision == "bf16-mixed"


def test_gradient_accumulation_and_linear_lr_scaling(tmp_path: Path) -> None:
    model = ImageClassifier(tiny_net(), lr=0.1, lr_scaling="linear", base_batch_size=256, schedule="constant")
    t = trainer(tmp_path, accumulate_grad_batches=2)
    t.fit(model, data())
    assert model.global_batch_size() == 16
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 16 / 256)
    assert t.global_step == 3  # optimizer steps, each from 2 batches


def inductor_cannot_compile() -> str | None:
    """What inductor lacks to compile C++ for the CPU here (a compiler, torch's or Python's headers), or None."""
    missing = []
    if not (os.environ.get("CXX") or shutil.which("g++")):
        missing.append("a C++ compiler (g++ or $CXX)")
    if not (Path(torch.__file__).parent / "include/torch/csrc/inductor/cpp_prefix.h").exists():
        missing.append("torch's C++ headers (torch/include; some CPU wheels lack them)")
    if not (Path(sysconfig.get_path("include")) / "Python.h").exists():
        missing.append(f"Python's headers ({sysconfig.get_path('include')}/Python.h)")
    if not missing:
        return None
    return f"inductor cannot compile on CPU without {', '.join(missing)}: apt-get install g++ python3-dev"


@pytest.mark.slow
def test_compile_trains_and_keeps_checkpoint_keys(tmp_path: Path) -> None:
    require(inductor_cannot_compile())
    model = ImageClassifier(tiny_net(), compile=True)
    t = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    t.fit(model, data(train_size=16))
    assert t.global_step == 2 and torch.isfinite(t.callback_metrics["train/loss"])
    assert model.net._compiled_call_impl is not None  # nn.Module.compile() was applied in place
    keys = set(model.net.state_dict())
    assert keys == set(tiny_net().state_dict())  # no "_orig_mod." prefixes: checkpoints stay portable
