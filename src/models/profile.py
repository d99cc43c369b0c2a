"""Parameter and FLOP counts of the presets, counted by torch rather than by hand.

``python -m src.models.profile`` prints the table in the README. FLOPs are reported
as multiply-adds (MACs), the unit of the ResNet papers; torch's FlopCounterMode
counts 2 FLOPs per MAC.
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from src.markdown import markdown_table
from src.models import resnet as R


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable[..., R.ResNet]
    input_size: tuple[int, int, int]  # C, H, W at which the paper reports FLOPs


PRESETS = [
    *(Preset(f"resnet{d}", getattr(R, f"resnet{d}"), (3, 224, 224)) for d in (18, 34, 50, 101, 152)),
    *(Preset(f"plain{d}", getattr(R, f"plain_resnet{d}"), (3, 224, 224)) for d in (18, 34)),
    *(Preset(f"cifar_resnet{d}", partial(R.cifar_resnet, d), (3, 32, 32)) for d in (20, 32, 44, 56, 110, 1202)),
    *(Preset(f"cifar_plain{d}", partial(R.cifar_plain, d), (3, 32, 32)) for d in (20, 32, 44, 56)),
    Preset("preact_resnet110", partial(R.preact_resnet, 110, block="basic"), (3, 32, 32)),
    *(Preset(f"preact_resnet{d}", partial(R.preact_resnet, d), (3, 32, 32)) for d in (164, 1001)),
]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on a single image of ``input_size`` (C, H, W)."""
    param = next(model.parameters())  # same device and dtype as the weights (bf16-true nets too)
    x = torch.zeros(1, *input_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.forward(x)  # .forward, not __call__: counts the eager graph even after nn.Module.compile()
    model.train(was_training)
    return counter.get_total_flops() // 2


def profile(preset: Preset) -> dict[str, object]:
    # The meta device builds and runs the graph without allocating or computing,
    # so even ResNet-1202 is counted in well under a second.
    with torch.device("meta"):
        model = preset.build()
    return {
        "preset": preset.name,
        "block": model.block,
        "depths": [len(getattr(model, s)) for s in model.stages],
        "unit": model.unit,
        "shortcut": model.shortcut,
        "params_M": count_params(model) / 1e6,
        "GMACs": count_macs(model, preset.input_size) / 1e9,
        "input": "x".join(map(str, preset.input_size[1:])),
    }


def preset_table(rows: list[dict[str, object]]) -> str:
    header = ["preset", "block", "depths", "unit", "shortcut", "params (M)", "GMACs", "input"]
    body = [
        [
            str(r["preset"]), str(r["block"]), "[" + ",".join(map(str, r["depths"])) + "]",  # type: ignore[call-overload]
            str(r["unit"]), str(r["shortcut"]), f"{r['params_M']:.2f}", f"{r['GMACs']:.3f}", str(r["input"]),
        ]
        for r in rows
    ]  # fmt: skip
    return markdown_table(header, body, numeric={5, 6})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help="preset names (default: all)")
    args = parser.parse_args(argv)
    known = {p.name: p for p in PRESETS}
    unknown = [n for n in args.presets if n not in known]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    print(preset_table([profile(known[n]) for n in (args.presets or known)]))


if __name__ == "__main__":
    main()
