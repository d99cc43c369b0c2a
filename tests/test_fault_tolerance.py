"""Fault tolerance outside SLURM (src/run.py, src/preemption.py, src/callbacks.py, src/checkpoint_io.py): kill -9
and resume, atomic checkpoint writes, a changed architecture on resume, a NaN loss.
Real processes, real signals, real files."""

import contextlib
import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from src.callbacks import FiniteLoss, ResumeState
from src.checkpoint_io import TMP_SUFFIX, AtomicCheckpointIO
from src.cli import main
from src.data.synthetic import SyntheticDataModule
from src.models.classifier import ImageClassifier
from src.models.resnet import ResNet
from src.run import RunLayout
from tests.conftest import run_cli
from tests.fault_injection import write_tiny_config

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python -m src.cli`` child: outside SLURM, no W&B, one thread for equal numerics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return env | {"PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"} | extra


def cli(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m src.cli fit ...`` as its own process (it must be killable)."""
    cmd = [sys.executable, "-m", "src.cli", "fit", *args]
    return subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_same_command_resumes_to_identical_weights(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path / "tiny.yaml", max_epochs=3)  # 8 steps per epoch, 24 in all
    reference = cli(tmp_path, "-c", str(config), "--run_dir", "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    # The same command twice; the injected callback kill -9s the first process after step 12 (mid-epoch 1).
    killer = '{"class_path": "tests.fault_injection.SignalAtStep", "init_args": {"step": 12, "marker": "killed"}}'
    command = ("-c", str(config), "--run_dir", "run", f"--trainer.callbacks+={killer}")
    first = cli(tmp_path, *command)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert (tmp_path / "killed").read_text().startswith("SIGKILL at global step 12, epoch 1")
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 8  # end of epoch 0

    second = cli(tmp_path, *command)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resumed training at global step 8, epoch 1" in second.stderr + second.stdout

    # Deterministic mode: bit-identical weights, optimizer state and metrics to the uninterrupted run.
    ref, got = load(tmp_path / "reference/checkpoints/last.ckpt"), load(tmp_path / "run/checkpoints/last.ckpt")
    assert got["global_step"] == ref["global_step"] == 24
    assert ref["state_dict"].keys() == got["state_dict"].keys()
    for key, value in ref["state_dict"].items():
        assert torch.equal(value, got["state_dict"][key]), key
    ref_opt, got_opt = ref["optimizer_states"][0]["state"], got["optimizer_states"][0]["state"]
    for a, b in zip(ref_opt.values(), got_opt.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    # Every metrics row the resumed run logged (steps 8..23, validation included) is in the reference, and
    # it logged every one of those steps: an empty metrics.csv is a subset too.
    resumed = metric_rows(tmp_path / "run/version_1/metrics.csv")
    assert resumed <= metric_rows(tmp_path / "reference/version_0/metrics.csv")
    assert {dict(row)["step"] for row in resumed} == {str(step) for step in range(8, 24)}, sorted(resumed)


SIGTERM_AT_12 = (  # a real SIGTERM to the training process after optimizer step 12, once per marker file
    '{"class_path": "tests.fault_injection.SignalAtStep", "init_args": {"step": 12, "marker": "m", "signum": 15}}'
)


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_next_step_exits_143_and_the_same_command_resumes(tmp_path: Path) -> None:
    # What a hard time limit, `scancel` or an eviction sends. Lightning alone finishes the epoch, saves
    # nothing and exits 0; here the step is saved and the exit code says the run is not finished.
    config = write_tiny_config(tmp_path / "tiny.yaml", max_epochs=3)  # 8 steps per epoch, 24 in all
    command = ("-c", str(config), "--run_dir", "run", f"--trainer.callbacks+={SIGTERM_AT_12}")
    first = cli(tmp_path, *command)
    assert first.returncode == 143, first.stderr[-3000:]
    assert "Received SIGTERM at global step 12, epoch 1" in first.stderr + first.stdout
    last_line = first.stdout.splitlines()[-1]
    assert "exiting with 143: the run is not finished, rerun the same command to resume" in last_line
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 12  # not the epoch-0 one (8)

    second = cli(tmp_path, *command)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resumed training at global step 12, epoch 1" in second.stderr + second.stdout
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 24


def test_sigterm_before_training_exits_143_not_0(tmp_path: Path) -> None:
    # Lightning's own SIGTERM path (its handler is the one in place during the sanity check) exits 0.
    config = write_tiny_config(tmp_path / "tiny.yaml", max_epochs=1)
    early = '{"class_path": "tests.fault_injection.SignalAtSanityCheck"}'
    run = cli(tmp_path, "-c", str(config), "--run_dir", "run", f"--trainer.callbacks+={early}")
    assert run.returncode == 143, run.stderr[-3000:]
    assert "Stopped by SIGTERM before training started: nothing to save; exiting with 143" in run.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize(("max_epochs", "max_steps", "last"), [(2, -1, 16), (-1, 12, 12)])
def test_sigusr1_at_the_last_step_finishes_the_run_instead_of_preempting_it(
    tmp_path: Path, max_epochs: int, max_steps: int, last: int
) -> None:
    # A requeue at the last step resumed past the end: the final validation never ran (CI's Slurm job
    # was requeued at its step 60 of 60). USR1 is only a warning, so the run finishes instead.
    config = write_tiny_config(tmp_path / "tiny.yaml", max_epochs=max_epochs, max_steps=max_steps)
    at_last = {"step": last, "marker": "m", "signum": int(signal.SIGUSR1)}
    usr1 = {"class_path": "tests.fault_injection.SignalAtStep", "init_args": at_last}
    run = cli(tmp_path, "-c", str(config), "--run_dir", "run", f"--trainer.callbacks+={json.dumps(usr1)}")
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout + run.stderr
    assert (tmp_path / "m").exists()  # the signal was sent
    assert f"Received SIGUSR1 at the last training step ({last}): finishing, no requeue" in out, out[-3000:]
    assert "Stopped by SIGUSR1" not in out
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == last
    if max_epochs == 2:  # the last epoch's validation ran
        rows = list(csv.DictReader((tmp_path / "run" / "version_0" / "metrics.csv").open()))
        assert {row["epoch"] for row in rows if row.get("val/err1")} == {"0", "1"}, rows


# Put on the child's PYTHONPATH: its first `import torch` waits until the test has sent its signal.
IMPORT_GATE = """\
import os, sys, time
class Gate:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            open(os.environ["GATE"] + ".waiting", "w").close()
            while not os.path.exists(os.environ["GATE"]):
                time.sleep(0.01)
sys.meta_path.insert(0, Gate())
"""


def test_sigusr1_while_torch_is_still_importing_is_held_and_acted_on_after_the_first_step(tmp_path: Path) -> None:
    # On a loaded node the imports take tens of seconds, and Slurm's warning signal may come meanwhile: it
    # killed a job in CI (exit 138 = 128 + SIGUSR1), lost without a requeue. Sent here while the process
    # stands at its first `import torch`.
    config = write_tiny_config(tmp_path / "tiny.yaml", max_epochs=1)
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "sitecustomize.py").write_text(IMPORT_GATE)
    gate = tmp_path / "open"
    env = cli_env(PYTHONPATH=f"{tmp_path / 'gate'}:{REPO}", GATE=str(gate))
    cmd = [sys.executable, "-m", "src.cli", "fit", "-c", str(config), "--run_dir", "run"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not gate.with_suffix(".waiting").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the process never reached `import torch`"
            time.sleep(0.01)
        assert "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text()
        os.kill(proc.pid, signal.SIGUSR1)
        gate.touch()
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, f"exit {proc.returncode}: {out[-3000:]}"  # -10: killed by the SIGUSR1
    assert "Received SIGUSR1 at global step 1, epoch 0" in out, out[-3000:]
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 1


def metric_rows(path: Path) -> set[tuple[tuple[str, str], ...]]:
    """metrics.csv rows as comparable tuples, without the wall-clock ``perf/*`` columns."""
    with open(path) as f:
        return {tuple((k, v) for k, v in sorted(row.items()) if not k.startswith("perf/")) for row in csv.DictReader(f)}


def _kill_while_saving(target: Path) -> tuple[int, int | None]:
    """Start the save loop, SIGKILL it while a save is being written; (last completed step, the .tmp's
    size at the kill or None when the kill came too late and the write had already finished)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_injection", "save-loop", str(target), "32"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    tmp = target.with_name(target.name + TMP_SUFFIX)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "0"  # one complete checkpoint exists
        deadline = time.monotonic() + 60
        while True:  # until the next save is being written
            assert time.monotonic() < deadline, "never caught a save in progress"
            with contextlib.suppress(FileNotFoundError):  # renamed between our two looks: look again
                if tmp.stat().st_size > 0:
                    break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    completed = [int(line) for line in proc.stdout.read().split()] if proc.stdout else []
    try:
        partial = tmp.stat().st_size
    except FileNotFoundError:
        partial = None
    return max([0, *completed]), partial


def test_kill_during_checkpoint_write_leaves_previous_checkpoint_loadable(tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    for _ in range(5):  # a kill can land just after a write finished: then try again
        last_done, partial = _kill_while_saving(target)
        if partial is not None and partial < target.stat().st_size:
            break
    else:
        pytest.fail("five kills never interrupted a checkpoint write")
    print(f"killed with {partial} of {target.stat().st_size} bytes written")

    ckpt = torch.load(target, weights_only=True)  # complete and readable, not the partial write
    assert ckpt["step"] in (last_done, last_done + 1)  # +1: killed after the rename, before the print
    assert torch.equal(ckpt["payload"], torch.arange(32 * 2**18, dtype=torch.float32) + ckpt["step"])
    # The interrupted write is really there, and the leftover .tmp is never picked.
    with pytest.raises((RuntimeError, OSError, EOFError, pickle.UnpicklingError)):  # what a cut zip gives
        torch.load(target.with_name(target.name + TMP_SUFFIX), weights_only=True)
    assert RunLayout(tmp_path, "x", target.parent.parent).resume_candidates() == [target]


def test_resume_picks_the_newest_checkpoint(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    layout = RunLayout(tmp_path / "runs", "x", tmp_path)
    io = AtomicCheckpointIO()
    for i, path in enumerate([ckpts / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt", ckpts / "last-v1.ckpt"]):
        io.save_checkpoint({"i": i}, path)
        os.utime(path, ns=(10**18 + i, 10**18 + i))
    assert layout.resume_candidates()[0] == ckpts / "last-v1.ckpt"
    os.utime(tmp_path / "hpc_ckpt_1.ckpt", ns=(2 * 10**18, 2 * 10**18))  # Lightning's SIGUSR1 save came last
    assert layout.resume_candidates() == [tmp_path / "hpc_ckpt_1.ckpt", ckpts / "last-v1.ckpt", ckpts / "last.ckpt"]
    assert RunLayout(tmp_path, "x", tmp_path / "none").resume_candidates() == []
    assert RunLayout(tmp_path, "x").resume_candidates() == []  # one-off runs never resume


@pytest.mark.slow
def test_resume_with_changed_architecture_names_the_mismatch(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["src.cli"])  # the CLI gets `args`, not pytest's argv
    config = str(write_tiny_config(in_tmp / "tiny.yaml", max_steps=2))
    run = main(["fit", "-c", config, "--run_dir", "run"])
    # The CLI trains with the fault-tolerance pieces wired in.
    assert isinstance(run.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # Trainer.callbacks is public but set by Lightning's callback connector, not declared on the class
    callbacks = run.trainer.callbacks  # type: ignore[attr-defined]
    assert any(isinstance(cb, FiniteLoss) for cb in callbacks)
    assert any(isinstance(cb, ResumeState) for cb in callbacks)
    assert (in_tmp / "run" / "checkpoints" / "last.ckpt").exists()

    # An input error before the first batch: one line on stderr, exit code 2, no traceback ...
    with pytest.raises(SystemExit) as err:
        main(["fit", "-c", config, "--run_dir", "run", "--trainer.max_steps", "4", "--model.net.init_args.widths",
              "[4, 16]"])  # fmt: skip
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: checkpoint ") and "Traceback" not in message
    assert "run/checkpoints/last.ckpt does not fit the model" in message
    assert "model.net.init_args.widths: [4, 8] in checkpoint, [4, 16] now" in message
    assert "net.fc.weight: checkpoint [4, 8] vs model [4, 16]" in message
    # ... and the rejected start leaves no log directory holding its config (version_0 is the first run's).
    assert sorted(p.name for p in (in_tmp / "run").iterdir()) == ["checkpoints", "version_0"]


def test_nan_loss_stops_training_naming_the_step(tmp_path: Path) -> None:
    net = ResNet(depth=[1, 1], widths=[4, 8], stem="cifar", num_classes=4, in_channels=1)
    model = ImageClassifier(net, lr=1e30, momentum=0.0, weight_decay=0.0, schedule="constant")  # diverges at once
    data = SyntheticDataModule(num_classes=4, in_channels=1, image_size=8, train_size=64, val_size=8, batch_size=8)
    trainer = Trainer(
        accelerator="cpu", max_steps=50, callbacks=[FiniteLoss()], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"training loss is (nan|inf) at global step \d+") as err:
        trainer.fit(model, datamodule=data)
    step = int(str(err.value).split("global step ")[1].split()[0])
    assert 0 < step == trainer.global_step < 50  # stopped at the first bad step, long before max_steps
    # Checked before backward: the weights are still those of the last good (finite) step.
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_deferred_nan_check_names_the_first_bad_step_and_never_checkpoints_it(tmp_path: Path) -> None:
    """The GPU mode (no host sync per step), run on the CPU: the exact first bad step, read later."""
    net = ResNet(depth=[1, 1], widths=[4, 8], stem="cifar", num_classes=4, in_channels=1)
    model = ImageClassifier(net, lr=1e30, momentum=0.0, weight_decay=0.0, schedule="constant")
    data = SyntheticDataModule(num_classes=4, in_channels=1, image_size=8, train_size=64, val_size=8, batch_size=8)
    saved = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    trainer = Trainer(
        accelerator="cpu", max_steps=50, callbacks=[FiniteLoss(gpu_check_every=10, defer=True), saved], logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"training loss is not finite at global step \d+") as err:
        trainer.fit(model, datamodule=data)
    first_bad = int(str(err.value).split("global step ")[1].split()[0])
    assert 0 < first_bad < 50
    # every checkpoint on disk is from before the first bad step, and finite
    for path in (tmp_path / "ckpt").glob("*.ckpt"):
        state = torch.load(path, weights_only=False)  # written by this test; hparams hold the net
        assert state["global_step"] <= first_bad
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_a_checkpoint_never_holds_non_finite_state(in_tmp: Path) -> None:
    # lr 1e6: finite losses whose updates overflow the weights. Saving every step, last.ckpt used to
    # get them (19 of 32 tensors here), and every resume loaded the NaNs again.
    config = str(write_tiny_config(in_tmp / "tiny.yaml", max_steps=30))
    with pytest.raises(FloatingPointError, match=r"not finite at global step \d+ .*: state_dict\.net\.") as err:
        main(["fit", "-c", config, "--model.lr=1e6", "--run_dir=run", "--last_checkpoint.every_n_train_steps=1"])
    assert "The checkpoint was not saved" in str(err.value)
    last = torch.load(in_tmp / "run/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    tensors = [*last["state_dict"].values(), *last["optimizer_states"][0]["state"][0].values()]
    assert last["global_step"] > 0 and all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


@pytest.mark.slow
def test_metrics_across_resumes_log_each_epoch_once_with_real_timings(tmp_path: Path) -> None:
    # Resumed at an epoch end (run 2) and mid-epoch after a SIGTERM (run 3): before, the re-entered
    # epoch was logged again with train accuracy 0, and perf/epoch_s was the machine's uptime.
    config = write_tiny_config(tmp_path / "tiny.yaml", max_epochs=3)  # 8 steps per epoch
    args = ("-c", str(config), "--run_dir", "run")
    assert cli(tmp_path, *args, "--trainer.max_epochs=1").returncode == 0
    assert cli(tmp_path, *args, f"--trainer.callbacks+={SIGTERM_AT_12}").returncode == 143
    assert cli(tmp_path, *args).returncode == 0
    rows = []
    for path in sorted((tmp_path / "run").glob("version_*/metrics.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    train_epochs = [int(row["epoch"]) for row in rows if row.get("train/acc1")]
    assert sorted(train_epochs) == [0, 1, 2]  # each epoch once, none repeated by a resume
    epoch_s = [float(row["perf/epoch_s"]) for row in rows if row.get("perf/epoch_s")]
    rates = [float(row["perf/images_per_s"]) for row in rows if row.get("perf/images_per_s")]
    assert len(epoch_s) == len(rates) == 3 and max(epoch_s) < 120 and all(0 < r < 1e7 for r in rates)


def test_resume_into_another_network_of_the_same_shapes_is_refused_unless_asked(
    in_tmp: Path, capsys: pytest.CaptureFixture
) -> None:
    # relu_before_add has the same tensors as original: before, the resume went on as another network.
    config = str(write_tiny_config(in_tmp / "tiny.yaml", max_steps=2))
    main(["fit", "-c", config, "--run_dir", "run"])
    changed = [
        "fit",
        "-c",
        config,
        "--run_dir",
        "run",
        "--trainer.max_steps=4",
        "--model.net.init_args.unit=relu_before_add",
    ]
    with pytest.raises(SystemExit) as err:
        main(changed)
    message = capsys.readouterr().err
    assert err.value.code == 2 and "holds another network than the config" in message
    assert "model.net.init_args.unit: original in checkpoint, relu_before_add now" in message
    assert "--allow_net_change true" in message and message.count("\n") == 1  # one line
    cli = main([*changed, "--allow_net_change=true"])  # fine-tuning into the changed net, on purpose
    assert cli.trainer.global_step == 4 and cli.model.net.unit == "relu_before_add"
    # A run decision, not the model's: not saved as a hyperparameter (a later resume decides again).
    assert "allow_net_change" not in load(in_tmp / "run" / "checkpoints" / "last.ckpt")["hyper_parameters"]


def test_fit_ckpt_path_of_another_network_stops_and_test_says_it_uses_the_checkpoint_s(
    in_tmp: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: LightningCLI put the checkpoint's hyperparameters over the config, silently.
    config = str(write_tiny_config(in_tmp / "tiny.yaml", max_steps=2))
    main(["fit", "-c", config, "--run_dir", "a"])
    ckpt = str(in_tmp / "a" / "checkpoints" / "last.ckpt")
    other = "--model.net.init_args.depth=[2, 2]"
    with pytest.raises(SystemExit) as err:
        main(["fit", "-c", config, "--ckpt_path", ckpt, other, "--trainer.max_steps=4"])
    message = capsys.readouterr().err
    assert err.value.code == 2 and f"checkpoint {ckpt} does not fit the model" in message
    assert "model.net.init_args.depth: [1, 1] in checkpoint, [2, 2] now" in message
    with caplog.at_level("INFO"):
        cli = main(["test", "-c", config, "--ckpt_path", ckpt, other])
    assert f"test: using the network of {ckpt}, not the config's" in caplog.text
    assert [len(cli.model.net.layer1), len(cli.model.net.layer2)] == [1, 1]


def test_a_checkpoint_that_saved_allow_net_change_as_a_model_hyperparameter_still_loads(in_tmp: Path) -> None:
    # Checkpoints written while allow_net_change was a model argument hold it in their hyperparameters;
    # LightningCLI parses those over the config, where the key no longer exists.
    config = str(write_tiny_config(in_tmp / "tiny.yaml", max_steps=2))
    main(["fit", "-c", config, "--run_dir", "a"])
    ckpt = in_tmp / "a" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    saved["hyper_parameters"]["allow_net_change"] = False
    torch.save(saved, ckpt)
    for subcommand, metric in (("test", "test/acc1"), ("validate", "val/acc1")):
        cli = main([subcommand, "-c", config, "--ckpt_path", str(ckpt)])
        assert metric in cli.trainer.callback_metrics
    # and the run's own config.yaml of that time, as README's reproduction command passes it
    old_config = in_tmp / "a" / "version_0" / "config.yaml"
    saved_config = yaml.safe_load(old_config.read_text())
    saved_config["model"]["allow_net_change"] = False
    old_config.write_text(yaml.safe_dump(saved_config))
    assert "test/acc1" in main(["test", "-c", str(old_config), "--ckpt_path", str(ckpt)]).trainer.callback_metrics
    predicted = main(["predict", "-c", config, "--ckpt_path", str(ckpt), "--trainer.limit_predict_batches=1"])
    assert predicted.trainer.predict_loop.predictions[0].shape[-1] == 4
    resumed = main(["fit", "-c", config, "--run_dir", "a", "--trainer.max_steps=4"])  # and a resume
    assert resumed.trainer.global_step == 4


EMA = '{"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}}'


def test_ema_weights_are_validated_checkpointed_and_survive_a_kill_9_resume(tmp_path: Path) -> None:
    # Lightning's EMAWeightAveraging as a config entry: validation runs on the EMA weights, checkpoints hold
    # them (and the raw weights beside them), and a resume restores both exactly.
    config = write_tiny_config(tmp_path / "tiny.yaml", max_epochs=3)  # 8 steps per epoch, 24 in all
    ema = ("-c", str(config), f"--trainer.callbacks+={EMA}")
    reference = cli(tmp_path, *ema, "--run_dir", "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    killer = '{"class_path": "tests.fault_injection.SignalAtStep", "init_args": {"step": 12, "marker": "killed"}}'
    command = (*ema, "--run_dir", "run", f"--trainer.callbacks+={killer}")
    assert cli(tmp_path, *command).returncode == -signal.SIGKILL
    second = cli(tmp_path, *command)
    assert second.returncode == 0 and "Resumed training at global step 8, epoch 1" in second.stderr, second.stderr

    ref, got = load(tmp_path / "reference/checkpoints/last.ckpt"), load(tmp_path / "run/checkpoints/last.ckpt")
    for part in ("state_dict", "current_model_state"):  # the EMA weights, and the raw ones
        for key, value in ref[part].items():
            assert torch.equal(value, got[part][key]), (part, key)
    weight = "net.layer1.0.conv1.weight"
    assert not torch.equal(ref["state_dict"][weight], ref["current_model_state"][weight])  # EMA != raw

    # The last epoch's logged val/loss is the EMA weights' (validating the checkpoint's state_dict).
    with open(tmp_path / "reference/version_0/metrics.csv") as f:
        logged = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]
    validate = run_cli("validate", "-c", str(config), "--ckpt_path", str(tmp_path / "reference/checkpoints/last.ckpt"),
                       f"--trainer.default_root_dir={tmp_path / 'validate'}")  # fmt: skip
    assert float(validate.trainer.callback_metrics["val/loss"]) == pytest.approx(logged[-1], rel=1e-5)


def test_a_checkpoint_written_before_depth_replaced_depths_still_tests_and_resumes(
    in_tmp: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """Its hyperparameters name the network as the configs then did (``depths`` and every argument spelled
    out); today's config spells the same ResNet-8 as ``depth: 8, stem: cifar``. Both are one network."""
    config = in_tmp / "r8.yaml"
    text = write_tiny_config(in_tmp / "tiny.yaml", max_steps=2).read_text()
    config.write_text(text.replace("{depth: [1, 1], widths: [4, 8], stem: cifar}", "{depth: 8, stem: cifar}"))
    main(["fit", "-c", str(config), "--run_dir", "a"])
    ckpt = torch.load(in_tmp / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    net = ckpt["hyper_parameters"]["net"]
    assert net["init_args"]["depth"] == 8
    net["init_args"] = {  # configs/models/*.yaml's spelling of a CIFAR net before `depth`
        "block": "basic", "depths": [1, 1, 1], "widths": [16, 32, 64], "stem": "cifar", "unit": "original",
        "shortcut": "A", "stride_in_1x1": False, "zero_init_residual": False, "num_classes": 4, "in_channels": 1,
        "drop_path_rate": 0.0,
    }  # fmt: skip
    (in_tmp / "b" / "checkpoints").mkdir(parents=True)
    old = in_tmp / "b" / "checkpoints" / "last.ckpt"
    torch.save(ckpt, old)

    resumed = main(["fit", "-c", str(config), "--run_dir", "b", "--trainer.max_steps=4"])  # found in the run dir
    assert resumed.trainer.global_step == 4
    torch.save(ckpt, in_tmp / "old.ckpt")
    # The parse-time check compares the config's num_classes/in_channels (not linked yet) too: state them.
    linked = ["--model.net.init_args.num_classes=4", "--model.net.init_args.in_channels=1"]
    again = main(["fit", "-c", str(config), "--ckpt_path", str(in_tmp / "old.ckpt"), "--trainer.max_steps=4", *linked])
    assert again.trainer.global_step == 4 and again.model.net.name == "r8"
    assert "holds another network" not in capsys.readouterr().err
    with caplog.at_level("INFO"):
        tested = main(["test", "-c", str(config), "--ckpt_path", str(in_tmp / "old.ckpt"), *linked])
    assert torch.isfinite(tested.trainer.callback_metrics["test/err1"])
    assert "not the config's" not in caplog.text  # one network, two spellings
