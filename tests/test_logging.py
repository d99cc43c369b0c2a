import csv
import hashlib
import platform
import re
import socket
import warnings
from pathlib import Path

import pytest
import torch
import wandb
import yaml
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from scripts.report import read_wandb_offline
from src.loggers import WandbOptions, describe_net, git_state, resolve_mode, run_loggers, run_name
from src.models import resnet as R
from src.models.profile import count_macs, count_params
from src.run import RunLayout
from tests.conftest import REPO
from tests.tiny_runs import fit, isolate_wandb, tiny_args


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_wandb(monkeypatch, tmp_path / "home")
    return tmp_path


@pytest.mark.parametrize(
    ("build", "name", "depth"),
    [
        (lambda: R.cifar_resnet(56, unit="full_preact"), "r56-full_preact", 56),
        (lambda: R.cifar_plain(20), "plain20", 20),
        (lambda: R.resnet50(), "r50", 50),
        (lambda: R.resnet18(shortcut="C", unit="bn_after_add"), "r18-bn_after_add-C", 18),
        (lambda: R.preact_resnet(164), "r164-full_preact-B", 164),
        (lambda: torch.nn.Linear(2, 2), "linear", None),
    ],
)
def test_run_name_counts_layers_like_the_papers(build, name: str, depth: int | None) -> None:
    with torch.device("meta"):
        net = build()
    assert run_name(net) == name
    assert describe_net(net).get("depth") == depth


def test_mode_auto_is_offline_without_credentials_and_env_wins(wandb_home: Path, monkeypatch) -> None:
    assert resolve_mode("auto") == "offline"
    netrc = wandb_home / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_mode("auto") == "online"  # what `wandb login` leaves behind
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("online") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    with pytest.raises(ValueError, match=r"mode='cloud' is not one of auto, online, offline, disabled"):
        resolve_mode("cloud")  # type: ignore[arg-type]


def test_csv_logger_always_comes_first(wandb_home: Path) -> None:
    csv_logger = RunLayout(wandb_home / "runs", "r8-original-A").csv_logger()
    mine = CSVLogger(wandb_home / "mine")  # a logger the config adds
    with pytest.warns(UserWarning, match="log_model=True needs online mode"):
        loggers = run_loggers(csv_logger, mine, WandbOptions(mode="offline", log_model=True), "r8-original-A")
    try:
        assert isinstance(loggers, list) and loggers[:2] == [csv_logger, mine]
        w = loggers[2]
        assert isinstance(w, WandbLogger) and w.save_dir == csv_logger.log_dir  # inside the run dir
        assert w.experiment.name == "r8-original-A" and w.experiment.settings.mode == "offline"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _ = csv_logger.experiment  # wandb/ is in its directory: no "previous log files ... deleted" warning
        assert not [c for c in caught if "exists and is not empty" in str(c.message)]
    finally:
        wandb.finish()
    assert run_loggers(csv_logger, None, WandbOptions(mode="disabled"), "x") == [csv_logger]
    assert run_loggers(csv_logger, False, WandbOptions(mode="offline"), "x") is False


def test_git_state(tmp_path: Path) -> None:
    state = git_state()
    assert re.fullmatch(r"[0-9a-f]{40}", state["git/commit"]) and isinstance(state["git/dirty"], bool)
    assert git_state(tmp_path) == {"git/commit": None, "git/dirty": None}


def _csv_column(run_dir: Path, key: str) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_offline_run_logs_config_facts_and_metrics(wandb_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = fit(tiny_args(wandb_home / "runs", "offline", "--wandb.group=g1", "--wandb.tags=[tiny,cpu]"))

    # CSV beside wandb: metrics per epoch, facts in hparams.yaml.
    for key in ("train/err1", "val/err1", "test/err1", "train/loss_epoch", "perf/epoch_s", "perf/images_per_s"):
        assert _csv_column(run_dir, key), f"{key} missing from metrics.csv"
    assert len(_csv_column(run_dir, "perf/epoch_s")) == 2
    assert all(v > 0 for v in _csv_column(run_dir, "perf/images_per_s"))
    facts = yaml.safe_load((run_dir / "hparams.yaml").read_text())  # safe_load: no Python tags in it
    net = R.ResNet(depth=8, stem="cifar", num_classes=10, in_channels=1)
    assert facts["run/name"] == "r8" and facts["run/group"] == "g1" and facts["run/tags"] == ["tiny", "cpu"]
    assert facts["model/params"] == count_params(net)
    assert facts["model/GMACs"] == pytest.approx(count_macs(net, (1, 16, 16)) / 1e9)
    assert facts["model/input"] == "1x16x16"
    assert (facts["model/depth"], facts["model/unit"], facts["model/shortcut"]) == (8, "original", "A")
    assert facts["hw/accelerator"] == "cpu" and facts["hw/precision"] == "32-true" and facts["hw/world_size"] == 1
    assert facts["git/commit"] == git_state()["git/commit"]
    assert (run_dir / "config.yaml").exists()
    # The software: versions as torch reports them, a digest of the lock files, one of the packages run on.
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    assert (facts["versions/python"], facts["versions/torch"]) == (platform.python_version(), str(torch.__version__))
    assert (facts["versions/cuda"], facts["versions/cudnn"]) == (torch.version.cuda, cudnn)
    lock = b"".join((REPO / name).read_bytes() for name in ("requirements.lock.txt", "requirements.torch.txt"))
    assert facts["env/lock"] == hashlib.sha256(lock).hexdigest()[:16]
    assert re.fullmatch(r"[0-9a-f]{16}", facts["env/packages"]) and isinstance(facts["env/off_lock"], list)

    # The offline W&B run sits inside the run directory and holds the resolved config and the same metrics.
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    config, history, info = read_wandb_offline(log)
    assert info == {"name": "r8", "group": "g1", "tags": ["tiny", "cpu"], "project": "resnet-template"}
    assert config["cli"]["model"]["net"]["init_args"]["unit"] == "original"
    assert config["cli"]["trainer"]["max_epochs"] == 2
    assert config["model/params"] == facts["model/params"] and config["git/commit"] == facts["git/commit"]
    env_keys = [k for k in facts if k.startswith(("env/", "versions/"))]
    assert len(env_keys) == 8 and {k: config[k] for k in env_keys} == {k: facts[k] for k in env_keys}
    val = [h["val/err1"] for h in history if "val/err1" in h]
    assert val == pytest.approx(_csv_column(run_dir, "val/err1"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with-block ends: connections are refused


def test_unreachable_server_falls_back_to_offline(wandb_home: Path, monkeypatch) -> None:
    # Online mode with a key, but the server refuses connections: the run must still complete.
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    args = tiny_args(wandb_home / "runs", "unreachable", "--wandb.init_timeout=3", epochs=1)
    with pytest.warns(UserWarning, match="(?s)wandb.init failed online .* logging offline instead"):
        run_dir = fit(args)
    assert _csv_column(run_dir, "test/err1")
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    config, history, info = read_wandb_offline(log)
    assert info["name"] == "r8", info
    assert config.get("run/name") == "r8", sorted(config)
    assert [h["test/err1"] for h in history if "test/err1" in h] == pytest.approx(_csv_column(run_dir, "test/err1"))
