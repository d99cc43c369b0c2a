"""Experiment 2, residual-unit orderings (Identity Mappings Fig. 4, Table 2) on a basic and a bottleneck net.

Paper, CIFAR-10 test error (%), ResNet-110 / ResNet-164: original 6.61 / 5.93, BN after addition
8.17 / 6.50, ReLU before addition 7.84 / 6.14, ReLU-only pre-activation 6.71 / 5.91, full
pre-activation 6.37 / 5.46. Shortcuts: identity, 1x1 projections where the shape changes (B).

    python scripts/experiments/units.py                                  # R110 + R164 on CIFAR-10
    python scripts/experiments/units.py --basic-depth 20 --bottleneck-depth 29   # a CPU-sized version
"""

from scripts.experiments.common import Run, cifar_depth_args, main, parser
from src.models.resnet import UNITS

PAPER = {  # Identity Mappings Table 2, CIFAR-10 test error %: (ResNet-110, ResNet-164)
    "original": (6.61, 5.93),
    "bn_after_add": (8.17, 6.50),
    "relu_before_add": (7.84, 6.14),
    "relu_only_preact": (6.71, 5.91),
    "full_preact": (6.37, 5.46),
}


def runs(basic_depth: int, bottleneck_depth: int | None) -> list[Run]:
    nets = [("basic", basic_depth)] + ([("bottleneck", bottleneck_depth)] if bottleneck_depth else [])
    return [
        Run(f"r{depth}-{unit}", cifar_depth_args(depth, block=block, unit=unit, shortcut="B"))
        for block, depth in nets
        for unit in UNITS
    ]


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--basic-depth", type=int, default=110, help="6n+2 (paper: 110)")
    p.add_argument("--bottleneck-depth", type=int, default=164, help="9n+2 (paper: 164); 0 skips it")
    args = p.parse_args()
    title = "Residual-unit orderings (Identity Mappings Fig. 4)"
    main("units", title, runs(args.basic_depth, args.bottleneck_depth or None), args, panels="model/depth")
