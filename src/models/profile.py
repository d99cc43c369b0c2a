"""Parameter and FLOP counts of the papers' nets (``PAPER_NETS``), counted by torch rather than by hand.

``python -m src.models.profile`` prints the table in the README. FLOPs are reported
as multiply-adds (MACs), the unit of the ResNet papers; torch's FlopCounterMode
counts 2 FLOPs per MAC.
"""

import argparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from src.markdown import markdown_table
from src.models import resnet as R


def input_size(name: str) -> tuple[int, int, int]:
    """C, H, W at which the papers report a net's FLOPs."""
    return (3, 32, 32) if R.PAPER_NETS[name].get("stem") == "cifar" else (3, 224, 224)


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


def profile(name: str) -> dict[str, object]:
    """One row of the table for the net ``name`` of ``PAPER_NETS``."""
    # The meta device builds and runs the graph without allocating or computing,
    # so even ResNet-1202 is counted in well under a second.
    with torch.device("meta"):
        model = R.build(name)
    size = input_size(name)
    return {
        **model.describe(),
        "params_M": count_params(model) / 1e6,
        "GMACs": count_macs(model, size) / 1e9,
        "input": "x".join(map(str, size[1:])),
    }


def preset_table(rows: list[dict[str, object]]) -> str:
    header = ["net", "block", "stages", "unit", "shortcut", "params (M)", "GMACs", "input"]
    body = [
        [
            str(r["name"]), str(r["block"]), "[" + ",".join(map(str, r["stages"])) + "]",  # type: ignore[call-overload]
            str(r["unit"]), str(r["shortcut"]), f"{r['params_M']:.2f}", f"{r['GMACs']:.3f}", str(r["input"]),
        ]
        for r in rows
    ]  # fmt: skip
    return markdown_table(header, body, numeric={5, 6})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nets", nargs="*", help="names of PAPER_NETS in src/models/resnet.py (default: all)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.nets if n not in R.PAPER_NETS]
    if unknown:
        parser.error(f"unknown net(s) {', '.join(unknown)}; choose from {', '.join(R.PAPER_NETS)}")
    print(preset_table([profile(n) for n in (args.nets or R.PAPER_NETS)]))


if __name__ == "__main__":
    main()
