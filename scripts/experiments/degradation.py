"""Experiment 1, degradation (ResNet paper Fig. 1 and Fig. 6): plain vs residual nets of depth 20-56.

Expected: the deeper plain nets have *higher training* error than the shallower ones; with
identity shortcuts (option A) the deeper nets train better instead.

    python scripts/experiments/degradation.py                      # CIFAR-10 if present, else Fashion-MNIST
    python scripts/experiments/degradation.py --quick              # smoke run (CI)
    python scripts/experiments/degradation.py --slurm --slurm-arg=--partition=gpu
"""

from scripts.experiments.common import Run, cifar_depth_args, main, net_name, parser

DEPTHS = (20, 32, 44, 56)


def runs(depths: tuple[int, ...] = DEPTHS) -> list[Run]:
    return [
        Run(net_name(depth=d, stem="cifar", shortcut=shortcut), cifar_depth_args(d, shortcut=shortcut, unit="original"))
        for shortcut in ("none", "A")
        for d in depths
    ]  # plain20 ... plain56, r20 ... r56


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS), help="6n+2 depths")
    args = p.parse_args()
    title = "Degradation: plain vs residual (ResNet paper Fig. 6)"
    main("degradation", title, runs(tuple(args.depths)), args, panels="model/shortcut")
