"""Experiment 3, shortcut options A/B/C (ResNet paper Table 3) on a CIFAR-size net and on ResNet-34.

Paper (ImageNet top-1 error, 10-crop, ResNet-34): A 25.03, B 24.52, C 24.19: B is slightly better
than A (the zero-padded channels learn no residual), C marginally better than B (more parameters).

    python scripts/experiments/shortcuts.py                 # ResNet-32 and ResNet-34 recipes
    python scripts/experiments/shortcuts.py --no-resnet34   # the CIFAR-size net only
"""

from scripts.experiments.common import Run, cifar_depth_args, main, net_args, parser


def runs(cifar_depth: int, resnet34: bool) -> list[Run]:
    out = [Run(f"r{cifar_depth}-{s}", cifar_depth_args(cifar_depth, shortcut=s)) for s in "ABC"]
    if resnet34:  # the ImageNet ResNet-34 (7x7 stem + max-pool, 64-512 channels), this dataset's schedule
        out += [Run(f"r34-{s}", net_args(depth=34, stem="imagenet", shortcut=s)) for s in "ABC"]
    return out


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--cifar-depth", type=int, default=32, help="6n+2")
    p.add_argument("--no-resnet34", action="store_true")
    args = p.parse_args()
    main(
        "shortcuts", "Shortcut options A/B/C (ResNet paper Table 3)", runs(args.cifar_depth, not args.no_resnet34), args
    )
