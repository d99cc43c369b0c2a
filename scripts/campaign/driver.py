"""There: the time-boxed stages one after another, each in a child process; results written after each.

A stage's box is an upper bound: what a stage leaves unused goes to the open-ended one (repro). A stage
that raises, times out or reports ``failures`` in its data is recorded as failed, with its traceback or
reasons, and the campaign goes on.
"""

import argparse
import json
import os
import shutil
import sys
import tarfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scripts.campaign import plan
from scripts.campaign.common import FMNIST_SRC, Box, Context, tail
from scripts.campaign.prepare import install_wheels
from scripts.runner import TIMED_OUT, child_env, run_one
from src import provenance
from src.markdown import markdown_table


def run_stage(args: argparse.Namespace) -> None:
    """Child process: one stage; writes <work>/<stage>.json (data + markdown, or the traceback)."""
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    ctx = Context(args.work, args.deadline, args.quick, args.data_dir, results, args.repro_epochs)
    out = args.work / f"{args.stage}.json"
    try:
        data, md = plan.stage(args.stage).run(ctx)
        failures = data.get("failures") or []
        status = "ok" if not failures else "failed: " + "; ".join(failures)
        out.write_text(json.dumps({"status": status, "data": data, "markdown": md}, default=str))
    except BaseException:
        out.write_text(json.dumps({"status": "failed", "traceback": traceback.format_exc()}))
        raise


def archive(work: Path, out: Path) -> None:
    """Everything small a stage wrote (logs, metrics, configs, reports, figures), without checkpoints."""
    tmp = out / "campaign.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.suffix not in (".ckpt", ".JPEG", ".wandb") and path.stat().st_size < 5e6:
                tar.add(path, arcname=str(path.relative_to(work)))
    tmp.replace(out / "campaign.tar.gz")


def summary(results: dict[str, Any], header: list[str]) -> str:
    rows = [[n, r["status"], f"{r.get('seconds', 0):.0f}", f"{r.get('box', 0):.0f}"] for n, r in results.items()]
    lines = ["# GPU campaign", "", *header, "", markdown_table(["stage", "status", "seconds", "box"], rows, [2, 3])]
    for name, r in results.items():
        lines += ["", f"## {name}", ""]
        lines += r.get("markdown") or []
        if r["status"] == "skipped":
            lines.append(r.get("why", ""))
        elif r["status"] != "ok":
            lines += ["", "```", r.get("traceback") or r.get("log_tail", ""), "```"]
    return "\n".join(lines) + "\n"


def box_of(b: Box, quick: bool) -> tuple[float, float]:
    return (b.quick, b.min_quick) if quick else (b.gpu, b.min_gpu)


def run(args: argparse.Namespace) -> None:
    t_start = time.time()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or out.parent / (out.name + "-work")).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = open(out / "campaign.log", "a")  # noqa: SIM115

    def say(msg: str) -> None:
        line = f"[{time.time() - t_start:6.1f} s] {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    installed = install_wheels(args.travel / "wheels", work / "pip.log")
    say(installed)
    # Recorded while the first stage runs (it takes seconds: torch's import, the package closure, git).
    command = [Path(sys.executable).name, "-m", "scripts.campaign", *sys.argv[1:]]
    recording = ThreadPoolExecutor(1).submit(provenance.write, out, command)
    travel_data = args.travel / "fashion-mnist"
    data_dir = args.data_dir or (travel_data if travel_data.is_dir() else FMNIST_SRC)
    names = [n for n in plan.STAGES if not args.only or n in args.only]
    boxes = {n: plan.stage(n).BOX for n in names}
    args.budget = args.budget or (1160.0 if args.quick else 540.0)  # the quick boxes fit a slow 2-core machine
    end = t_start + args.budget
    header = [f"`{' '.join(command)}`, budget {args.budget:.0f} s; data {data_dir}; {installed}.", ""]
    # One thread per process in --quick: on 2 shared cores a 2-thread torch waits on every parallel
    # region for a thread the scheduler gave away (measured 10x slower under load).
    threads = 1 if args.quick else os.cpu_count() or 2
    results: dict[str, Any] = {}
    for i, name in enumerate(names):
        later = sum(box_of(boxes[n], args.quick)[0] for n in names[i + 1 :] if boxes[n].reserve)
        left = end - time.time()
        size, least = box_of(boxes[name], args.quick)
        box = min(size, left) if size else left - later
        if box < least:
            results[name] = {"status": "skipped", "box": box, "why": f"{box:.0f} s left, needs {least:.0f}"}
            say(f"{name}: skipped ({box:.0f} s left)")
            continue
        say(f"{name}: start, box {box:.0f} s")
        (work / "results.json").write_text(json.dumps(results, default=str))
        t0 = time.time()
        cmd = [sys.executable, "-m", "scripts.campaign", "stage", name, "--work", str(work)]
        cmd += ["--deadline", str(t0 + box), "--data-dir", str(data_dir), "--results", str(work / "results.json")]
        cmd += ["--quick"] if args.quick else []
        cmd += [f"--repro-epochs={args.repro_epochs}"] if args.repro_epochs else []
        rc = run_one(cmd, work / f"{name}.log", box + 5, child_env(threads))
        if len(header) == 2:  # the provenance line, once it is recorded
            header.append(provenance.summary(recording.result()) + " (provenance.json)")
        saved = work / f"{name}.json"
        r = json.loads(saved.read_text()) if saved.exists() else {"status": "failed"}
        if rc == TIMED_OUT:
            r["status"] = "timeout"
        elif rc != 0 and r["status"] == "ok":
            r["status"] = f"failed (exit {rc})"
        r |= {"seconds": time.time() - t0, "box": box, "rc": rc}
        if r["status"] != "ok":
            r["log_tail"] = tail(work / f"{name}.log", 4000)
        results[name] = r
        say(f"{name}: {r['status'][:200]} in {r['seconds']:.0f} s")
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "summary.md").write_text(summary(results, header))
        archive(work, out)
    recording.result()  # raises here if recording failed
    say(f"done in {time.time() - t_start:.0f} s: {out / 'summary.md'}")
    log.close()
