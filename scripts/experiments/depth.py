"""Experiment 4, depth scaling (ResNet paper Table 6): CIFAR ResNet-20...110, option A.

Paper, CIFAR-10 test error (%): R20 8.75, R32 7.51, R44 7.17, R56 6.97, R110 6.43 (best of 5 runs;
R110 mean 6.61 +- 0.16), with the paper's schedule (configs/recipes/cifar.yaml).

    python scripts/experiments/depth.py
    python scripts/experiments/depth.py --depths 20 32 44    # a subset
"""

from scripts.experiments.common import Run, cifar_depth_args, main, parser

PAPER = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}


def runs(depths: list[int]) -> list[Run]:
    # ResNet-110 gets the paper's warm-up (lr 0.01 for 400 iterations) from cifar_depth_args.
    return [Run(f"r{d}", cifar_depth_args(d, shortcut="A", unit="original")) for d in depths]


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--depths", type=int, nargs="+", default=list(PAPER))
    args = p.parse_args()
    main("depth", "Depth scaling (ResNet paper Table 6)", runs(args.depths), args)
