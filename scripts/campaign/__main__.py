"""``python -m scripts.campaign prepare | run | stage``: see the package's docstring."""

import argparse
from pathlib import Path

from scripts import campaign
from scripts.campaign import driver, plan
from scripts.campaign.common import FMNIST_SRC, TRAVEL
from scripts.campaign.prepare import prepare


def main() -> None:
    doc = campaign.__doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m scripts.campaign",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="here: wheels and Fashion-MNIST into .travel/ (ignored by git)")
    pp.add_argument("--travel", type=Path, default=TRAVEL)
    pp.add_argument("--fmnist", type=Path, default=FMNIST_SRC)
    pr = sub.add_parser("run", help="there: the time-boxed stages; results into --out")
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--work", type=Path, help="scratch folder (default: <out>-work)")
    pr.add_argument("--budget", type=float, help="seconds for all stages (default 540; 1160 with --quick)")
    pr.add_argument("--quick", action="store_true", help="CPU, tiny sizes, every stage (the test suite)")
    pr.add_argument("--travel", type=Path, default=TRAVEL)
    pr.add_argument("--data-dir", type=Path, help="Fashion-MNIST idx files (default: .travel/ or Debian's)")
    pr.add_argument("--only", nargs="+", choices=plan.STAGES, help="run only these stages")
    pr.add_argument("--repro-epochs", type=int, help="epochs of the reproductions (default: measured in the stage)")
    ps = sub.add_parser("stage", help="internal: one stage in a child process")
    ps.add_argument("stage", choices=plan.STAGES)
    ps.add_argument("--work", type=Path, required=True)
    ps.add_argument("--deadline", type=float, required=True)
    ps.add_argument("--data-dir", type=Path, required=True)
    ps.add_argument("--results", type=Path, required=True)
    ps.add_argument("--quick", action="store_true")
    ps.add_argument("--repro-epochs", type=int)
    args = p.parse_args()
    {"prepare": prepare, "run": driver.run, "stage": driver.run_stage}[args.command](args)


if __name__ == "__main__":
    main()
