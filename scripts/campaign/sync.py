"""Stage sync: does a training step of the real ``fit`` make the host wait for the GPU?

Runs the time-to-accuracy configuration (Fashion-MNIST ResNet-20, data on the device, bf16 +
channels_last) through the CLI for a few dozen steps with ``SyncCheck``, which arms
``torch.cuda.set_sync_debug_mode("error")`` inside the steps that neither log nor check for NaN: any
read-back there (``.item()``, ``.cpu()``, a data-dependent shape, a copy from pageable memory) raises
where it happens, and the stage reports it with its stack. tests/test_host_sync.py checks the ops on CPU
(a dispatch mode); it cannot see what only CUDA does, which is what this stage is for.
"""

import json

from scripts.campaign import tta
from scripts.campaign.common import Box, Context, StageResult, tail
from scripts.runner import child_env, cli, run_one

BOX = Box(gpu=45, quick=60, min_gpu=25, min_quick=20)
WARMUP, STEPS = 5, 40  # armed steps: WARMUP .. WARMUP + STEPS, less the logging steps
QUICK_WARMUP, QUICK_STEPS = 2, 6  # on the CPU the stage runs its path, not a check


def run(ctx: Context) -> StageResult:
    root = ctx.work / "sync"
    report = root / "sync.json"
    warmup, steps = (QUICK_WARMUP, QUICK_STEPS) if ctx.quick else (WARMUP, STEPS)
    init = {"report": str(report), "warmup": warmup, "steps": steps}
    check = {"class_path": "scripts.campaign.callbacks.SyncCheck", "init_args": init}
    args = tta.args(ctx, 1, int(max(10, ctx.left() - 25)))
    args = [a for a in args if not a.startswith("--trainer.default_root_dir")]
    args += [f"--trainer.default_root_dir={root}", f"--trainer.max_steps={warmup + steps + 1}"]
    args += ["--trainer.limit_val_batches=0", f"--trainer.callbacks+={json.dumps(check)}"]
    if ctx.quick:  # the on-device recipe and the whole step, at CPU cost
        args = [a for a in args if not a.startswith("--trainer.limit_train_batches")]
        args.append(f"--trainer.limit_train_batches={warmup + steps + 1}")
        args.append("--data.init_args.batch_size=16")
    rc = run_one(cli(*args), root / "sync.log", ctx.left() - 3, child_env(4))
    if not report.exists():
        raise RuntimeError(
            f"the sync run wrote no report (exit {rc}); see {root / 'sync.log'}:\n" + tail(root / "sync.log")
        )
    found = json.loads(report.read_text())
    armed, sync = found["armed_steps"], found["sync"]
    data = {"rc": rc, "cuda": found["cuda"], "armed_steps": armed, "sync": sync, "failures": []}
    if sync:
        data["failures"].append(f"a host sync at step {sync['step']}: {sync['error']}")
        md = [f"**A host sync inside a training step** (step {sync['step']}; armed steps {armed[0]}-{sync['step']}):"]
        md += ["", "```", sync["stack"][-6000:], "```"]
    elif not found["cuda"]:
        md = [
            f"No CUDA device: the sync debug mode could not be armed, so nothing was checked on the device. The "
            f"fit ran its {len(armed)} checked steps (of {warmup + steps + 1}) through SyncCheck on the CPU; "
            "tests/test_host_sync.py checks the ops there."
        ]
    else:
        md = [f"No host sync in {len(armed)} training steps of `fit` (steps {armed[0]}-{armed[-1]}, not logging)."]
    if rc and not sync:
        data["failures"].append(f"the sync run failed (exit {rc})")
        md += ["", "```", tail(root / "sync.log"), "```"]
    if len(armed) < steps // 2 and not sync:
        data["failures"].append(f"only {len(armed)} steps were checked")
    return data, md
