"""One configurable ResNet for the whole family of the two papers.

He et al., "Deep Residual Learning for Image Recognition" (2015) and
"Identity Mappings in Deep Residual Networks" (2016). Pure torch: no Lightning here.

Vocabulary (every name is a constructor argument of ``ResNet``):

============  ==================================================================
depth         layers, ruled by the stem: ImageNet 18/34 (basic) and 50/101/152
              (bottleneck) with the ResNet paper's Table 1 stages; CIFAR 6n+2
              (basic) or 9n+2 (bottleneck), n blocks in each of 3 stages. Or an
              explicit list of blocks per stage, e.g. [3, 4, 23, 3]
block         ``basic`` (two 3x3 convs, expansion 1) | ``bottleneck`` (1x1-3x3-1x1,
              expansion 4); default: what the depth rule gives (CIFAR: basic)
widths        base channels per stage; default [64,128,256,512] ImageNet, [16,32,64] CIFAR
stem          ``imagenet`` 7x7/2 conv-BN-ReLU + 3x3/2 max-pool | ``cifar`` 3x3 conv-BN-ReLU
unit          Identity Mappings Fig. 4, one forward function each (``UNITS``):
              (a) ``original``          conv-BN-ReLU-conv-BN, add, ReLU
              (b) ``bn_after_add``      conv-BN-ReLU-conv, add, BN, ReLU
              (c) ``relu_before_add``   conv-BN-ReLU-conv-BN-ReLU, add
              (d) ``relu_only_preact``  ReLU-conv-BN-ReLU-conv-BN, add
              (e) ``full_preact``       BN-ReLU-conv-BN-ReLU-conv, add
shortcut      ``A`` identity, zero-padded channels + strided subsampling where the
              shape changes (no parameters) | ``B`` 1x1 conv(+BN) projection only
              where the shape changes | ``C`` projection in every block |
              ``none`` no shortcut at all (the plain nets of the degradation study);
              default: the paper's per stem (CIFAR A, ImageNet B)
drop_path_rate  stochastic depth (Huang et al. 2016): each training image skips a
              block's residual branch with probability rising linearly from 0 in
              the first block to this rate in the last; 0 (default) = off
============  ==================================================================

A net's ``name`` says what differs from the paper's defaults: ``r56``, ``plain20``,
``r110-full_preact-B`` (``PAPER_NETS`` lists the nets of both papers by that name).

Where the arguments match torchvision's resnet18...152 (block per depth, unit
``original``, shortcut ``B``, imagenet stem, stride on the 3x3 conv) the parameter
names are torchvision's, so its ``state_dict`` loads with ``strict=True``.
"""

from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

__all__ = [
    "PAPER_NETS",
    "ResNet",
    "build",
    "cifar_plain",
    "cifar_resnet",
    "plain_resnet18",
    "plain_resnet34",
    "preact_resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]

BlockName = Literal["basic", "bottleneck"]
UnitName = Literal["original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact"]
ShortcutName = Literal["A", "B", "C", "none"]
StemName = Literal["imagenet", "cifar"]

BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B", "C", "none")
STEMS: tuple[StemName, ...] = ("imagenet", "cifar")
PREACT_UNITS = ("relu_only_preact", "full_preact")

# ResNet paper Table 1: block and blocks per stage of the ImageNet nets.
IMAGENET_DEPTHS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
WIDTHS = {"imagenet": [64, 128, 256, 512], "cifar": [16, 32, 64]}
# Option B on ImageNet (ResNet paper Table 3), option A on CIFAR (Sec. 4.2).
DEFAULT_SHORTCUT = {"imagenet": "B", "cifar": "A"}
LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}


def _check_choice(key: str, value: object, allowed: Collection[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _check_positive(key: str, values: Sequence[int]) -> None:
    if not values or any(not isinstance(v, int) or v <= 0 for v in values):
        raise ValueError(f"{key}={list(values)!r} must be a non-empty list of positive integers")


def stage_depths(depth: int | Sequence[int], block: str | None, stem: str) -> tuple[str, list[int]]:
    """The block and blocks per stage that ``depth`` means for ``stem``; a list is taken as it is."""
    if block is not None:
        _check_choice("block", block, BLOCKS)
    if not isinstance(depth, int):
        _check_positive("depth", list(depth))
        return block or "basic", list(depth)
    if stem == "imagenet":
        if depth not in IMAGENET_DEPTHS:
            raise ValueError(
                f"depth={depth} is not an ImageNet depth ({', '.join(map(str, IMAGENET_DEPTHS))}); "
                "give the blocks per stage as a list instead, e.g. depth=[2, 2, 2, 2]"
            )
        rule, stages = IMAGENET_DEPTHS[depth]
        if block not in (None, rule):
            raise ValueError(f"depth={depth} is a {rule} net (ResNet paper Table 1), not block={block!r}")
        return rule, list(stages)
    block = block or "basic"
    per_block = LAYERS_PER_BLOCK[block]
    n, rest = divmod(depth - 2, 3 * per_block)
    if rest or n < 1:
        raise ValueError(
            f"depth={depth} is not of the form {3 * per_block}n+2 required by block={block!r} "
            f"(e.g. {', '.join(str(3 * per_block * k + 2) for k in (3, 5, 7, 9, 18))})"
        )
    return block, [n, n, n]


def resolved_args(init_args: dict[str, Any]) -> dict[str, Any]:
    """``init_args`` with the rules applied (depth as blocks per stage, block, widths, shortcut), so that
    two spellings of one network compare equal: ``depth: 20`` on CIFAR and ``depth: [3, 3, 3]``."""
    stem = init_args.get("stem") or "imagenet"
    try:
        block, stages = stage_depths(init_args.get("depth", 18), init_args.get("block"), stem)
    except (ValueError, TypeError):
        return dict(init_args)  # not a valid network: compared as written
    widths = init_args.get("widths")
    return {
        **init_args,
        "depth": stages,
        "block": block,
        "widths": list(WIDTHS.get(stem, []) if widths is None else widths),
        "shortcut": init_args.get("shortcut") or DEFAULT_SHORTCUT.get(stem),
    }


def conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding; no bias, a BN always follows or precedes it."""
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, used in bottlenecks and projection shortcuts."""
    return nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by ``stride`` and zero-padded to ``planes`` channels."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.pad, self.stride = planes - inplanes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads from the last dim backwards: (W, W, H, H, C_front, C_back)
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))

    def extra_repr(self) -> str:
        return f"pad_channels={self.pad}, stride={self.stride}"


class Projection(nn.Sequential):
    """Options B/C: 1x1 conv + BN (torchvision's ``downsample``: keys ``0.weight``, ``1.weight``).

    Pre-activation units already normalised the input they hand over, so their
    projection is the bare conv, as in the Identity Mappings code.
    """

    def __init__(self, inplanes: int, planes: int, stride: int, norm: bool = True) -> None:
        layers: list[nn.Module] = [conv1x1(inplanes, planes, stride)]
        if norm:
            layers.append(nn.BatchNorm2d(planes))
        super().__init__(*layers)


def make_shortcut(shortcut: str, inplanes: int, planes: int, stride: int, preact: bool) -> nn.Module | None:
    """The shortcut of one block; ``None`` means no shortcut (plain net)."""
    reshape = stride != 1 or inplanes != planes
    if shortcut == "none":
        return None
    if shortcut == "C" or (shortcut == "B" and reshape):
        return Projection(inplanes, planes, stride, norm=not preact)
    if shortcut == "A" and reshape:
        if planes < inplanes:
            raise ValueError(f"shortcut='A' can only widen ({inplanes} -> {planes} channels); use 'B'")
        return ZeroPadShortcut(inplanes, planes, stride)
    return nn.Identity()


# --- The five unit orderings, Identity Mappings Fig. 4 (a)-(e) ----------------------------
# Each reads the block's (conv, BN) pairs in order; ``blk.add`` ends the residual branch
# (stochastic depth) and adds the shortcut of the given input (nothing in a plain net).


def original(blk: "ResidualBlock", x: torch.Tensor) -> torch.Tensor:
    """(a) conv-BN-ReLU, ..., conv-BN, add, ReLU: the ResNet paper's unit."""
    out = x
    *body, (conv, bn) = blk.pairs()
    for c, b in body:
        out = blk.relu(b(c(out)))
    return blk.relu(blk.add(bn(conv(out)), x))


def bn_after_add(blk: "ResidualBlock", x: torch.Tensor) -> torch.Tensor:
    """(b) conv-BN-ReLU, ..., conv, add, BN, ReLU: the last BN normalises the sum."""
    out = x
    *body, (conv, bn) = blk.pairs()
    for c, b in body:
        out = blk.relu(b(c(out)))
    return blk.relu(bn(blk.add(conv(out), x)))


def relu_before_add(blk: "ResidualBlock", x: torch.Tensor) -> torch.Tensor:
    """(c) conv-BN-ReLU, ..., conv-BN-ReLU, add: the branch is non-negative."""
    out = x
    for c, b in blk.pairs():
        out = blk.relu(b(c(out)))
    return blk.add(out, x)


def relu_only_preact(blk: "ResidualBlock", x: torch.Tensor) -> torch.Tensor:
    """(d) ReLU-conv-BN, ..., ReLU-conv-BN, add."""
    (conv, bn), *body = blk.pairs()
    out = pre = F.relu(x)  # not in place: x is still the identity path
    out = bn(conv(out))
    for c, b in body:
        out = b(c(blk.relu(out)))
    return blk.add(out, pre if blk.preact_shortcut else x)


def full_preact(blk: "ResidualBlock", x: torch.Tensor) -> torch.Tensor:
    """(e) BN-ReLU-conv, ..., BN-ReLU-conv, add: each BN belongs to the conv after it."""
    (conv, bn), *body = blk.pairs()
    out = pre = blk.relu(bn(x))
    out = conv(out)
    for c, b in body:
        out = c(blk.relu(b(out)))
    return blk.add(out, pre if blk.preact_shortcut else x)


UNITS: dict[str, Callable[["ResidualBlock", torch.Tensor], torch.Tensor]] = {
    "original": original,
    "bn_after_add": bn_after_add,
    "relu_before_add": relu_before_add,
    "relu_only_preact": relu_only_preact,
    "full_preact": full_preact,
}


class ResidualBlock(nn.Module):
    """A chain of convs run in one of the ``UNITS`` orderings; subclasses only build the convs.

    ``bnN`` is the BN that belongs to ``convN``: after it in post-activation units, before
    it in ``full_preact`` (so it has the conv's input width). In ``bn_after_add`` the last
    BN normalises the sum.
    """

    expansion = 1

    def __init__(self, unit: str, downsample: nn.Module | None, preact_shortcut: bool) -> None:
        super().__init__()
        _check_choice("unit", unit, UNITS)
        self.unit = unit
        self.run_unit = UNITS[unit]
        self.downsample = downsample
        # Identity Mappings, Sec. 4.1: projections (and the first unit after the stem)
        # take the pre-activated input; identity shortcuts take the raw one.
        self.preact_shortcut = preact_shortcut
        self.relu = nn.ReLU(inplace=True)
        # Stochastic depth on the residual branch, per image ("row"); set by ResNet, None when off.
        self.drop_path: StochasticDepth | None = None

    def layers(self) -> tuple[list[nn.Conv2d], list[nn.BatchNorm2d]]:
        raise NotImplementedError

    def pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return list(zip(*self.layers(), strict=True))

    def add(self, branch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """End of the residual branch: drop it (stochastic depth), add the shortcut of ``x``."""
        if self.drop_path is not None:
            branch = self.drop_path(branch)
        if self.downsample is None:
            return branch
        return branch + self.downsample(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_unit(self, x)

    def zero_init_last(self) -> None:
        """Make the residual branch output zero, so the block starts as its shortcut.

        Goyal et al. 2017 (arXiv 1706.02677): zero the gamma of the branch's last BN.
        Where that BN sits before a ReLU (full_preact) or after the add
        (bn_after_add), zero the last conv instead, or the ReLU would stay dead.
        """
        convs, bns = self.layers()
        if self.unit in ("full_preact", "bn_after_add"):
            nn.init.zeros_(convs[-1].weight)
        elif self.unit == "relu_before_add":
            raise ValueError(
                "zero_init_residual=True is not supported with unit='relu_before_add': "
                "its branch ends in a ReLU, which a zeroed branch would leave dead"
            )
        else:
            nn.init.zeros_(bns[-1].weight)


def _bn(unit: str, conv: nn.Conv2d) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(conv.in_channels if unit == "full_preact" else conv.out_channels)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        unit: str = "original",
        downsample: nn.Module | None = None,
        preact_shortcut: bool = False,
    ) -> None:
        super().__init__(unit, downsample, preact_shortcut)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = _bn(unit, self.conv1)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = _bn(unit, self.conv2)

    def layers(self) -> tuple[list[nn.Conv2d], list[nn.BatchNorm2d]]:
        return [self.conv1, self.conv2], [self.bn1, self.bn2]


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101/152, ResNet-164/1001).

    ``stride_in_1x1=False`` puts the stride on the 3x3 conv (torchvision "v1.5");
    ``True`` puts it on the first 1x1, as in the original paper.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        unit: str = "original",
        downsample: nn.Module | None = None,
        preact_shortcut: bool = False,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__(unit, downsample, preact_shortcut)
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, s1)
        self.bn1 = _bn(unit, self.conv1)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = _bn(unit, self.conv2)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = _bn(unit, self.conv3)

    def layers(self) -> tuple[list[nn.Conv2d], list[nn.BatchNorm2d]]:
        return [self.conv1, self.conv2, self.conv3], [self.bn1, self.bn2, self.bn3]


class Stage(nn.Sequential):
    """``blocks`` blocks of ``planes`` base channels; the first one strides and reshapes the shortcut."""

    def __init__(
        self,
        block_cls: type[BasicBlock | Bottleneck],
        inplanes: int,
        planes: int,
        blocks: int,
        stride: int,
        unit: str,
        shortcut: str,
        first_stage: bool,
        **block_kwargs: Any,
    ) -> None:
        preact = unit in PREACT_UNITS
        outplanes = planes * block_cls.expansion
        layers = []
        for j in range(blocks):
            s = stride if j == 0 else 1
            downsample = make_shortcut(shortcut, inplanes, outplanes, s, preact)
            preact_shortcut = preact and (isinstance(downsample, Projection) or (first_stage and j == 0))
            layers.append(
                block_cls(
                    inplanes,
                    planes,
                    s,
                    unit=unit,
                    downsample=downsample,
                    preact_shortcut=preact_shortcut,
                    **block_kwargs,
                )
            )
            inplanes = outplanes
        super().__init__(*layers)
        self.out_channels = outplanes


class ResNet(nn.Module):
    """A ResNet built from arguments; see the module docstring for the vocabulary.

    Pre-activation units (d, e) drop the stem's ReLU (and for (e) its BN too): the
    first unit applies them before splitting into its two paths. Those nets end
    with BN + ReLU before pooling, since their last sum is not normalised.
    """

    def __init__(
        self,
        depth: int | Sequence[int] = 18,
        block: BlockName | None = None,
        widths: Sequence[int] | None = None,
        stem: StemName = "imagenet",
        unit: UnitName = "original",
        shortcut: ShortcutName | None = None,
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_choice("stem", stem, STEMS)
        _check_choice("unit", unit, UNITS)
        sc: str = shortcut or DEFAULT_SHORTCUT[stem]
        _check_choice("shortcut", sc, SHORTCUTS)
        block_name, depths = stage_depths(depth, block, stem)
        widths = list(WIDTHS[stem] if widths is None else widths)
        _check_positive("widths", widths)
        _check_positive("num_classes", [num_classes])
        _check_positive("in_channels", [in_channels])
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f"drop_path_rate={drop_path_rate} must be in [0, 1)")
        if drop_path_rate and sc == "none":
            raise ValueError(
                f"drop_path_rate={drop_path_rate} needs shortcuts: with shortcut='none' a dropped branch is the block"
            )
        if len(depths) != len(widths):
            raise ValueError(f"depth={depths} and widths={widths} must have the same length (one entry per stage)")
        block_cls: type[BasicBlock | Bottleneck] = BasicBlock if block_name == "basic" else Bottleneck
        block_kwargs = {"stride_in_1x1": stride_in_1x1} if block_cls is Bottleneck else {}  # the 1x1 to stride
        preact = unit in PREACT_UNITS
        self.block, self.stem, self.unit, self.shortcut = block_name, stem, unit, sc
        self.stage_depths = depths
        self.depth = LAYERS_PER_BLOCK[block_name] * sum(depths) + 2  # convs + fc, counted as the papers do

        # Stem; names follow torchvision (conv1, bn1, relu, maxpool).
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.Identity() if unit == "full_preact" else nn.BatchNorm2d(widths[0])
        self.relu = nn.Identity() if preact else nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        inplanes = widths[0]
        for i, (blocks, width) in enumerate(zip(depths, widths, strict=True)):
            stage = Stage(block_cls, inplanes, width, blocks, 1 if i == 0 else 2, unit, sc, i == 0, **block_kwargs)
            self.add_module(f"layer{i + 1}", stage)  # torchvision's names: its state_dict loads as is
            inplanes = stage.out_channels

        self.num_features = inplanes
        self.final_norm: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(inplanes), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    m.zero_init_last()
        self.drop_path_rate = drop_path_rate
        if drop_path_rate:  # the linear decay rule of Huang et al.: p_l = l / L * p_L
            blocks_ = [m for m in self.modules() if isinstance(m, ResidualBlock)]
            for i, m in enumerate(blocks_):
                m.drop_path = StochasticDepth(drop_path_rate * i / max(len(blocks_) - 1, 1), mode="row")

    @property
    def stages(self) -> list[Stage]:
        return [m for m in self.children() if isinstance(m, Stage)]

    @property
    def name(self) -> str:
        """``r56``, ``plain20``, ``r8-full_preact-B``: the depth, then the unit and shortcut where not the default."""
        if self.shortcut == "none":
            return f"plain{self.depth}" + ("" if self.unit == "original" else f"-{self.unit}")
        parts = [f"r{self.depth}"]
        if self.unit != "original":
            parts.append(self.unit)
        if self.shortcut != DEFAULT_SHORTCUT[self.stem]:
            parts.append(self.shortcut)
        return "-".join(parts)

    def describe(self) -> dict[str, Any]:
        """The facts a run records about its network (W&B summary, reports)."""
        return {"name": self.name, "depth": self.depth, "block": self.block, "stages": self.stage_depths,
                "unit": self.unit, "shortcut": self.shortcut}  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return self.final_norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# The nets of both papers by name: argument bundles, nothing else. ``ResNet(**PAPER_NETS[n]).name == n``.
PAPER_NETS: dict[str, dict[str, Any]] = {
    **{f"r{d}": {"depth": d} for d in IMAGENET_DEPTHS},
    **{f"plain{d}": {"depth": d, "shortcut": "none"} for d in (18, 34)},  # ResNet paper Table 2
    **{f"r{d}": {"depth": d, "stem": "cifar"} for d in (20, 32, 44, 56, 110, 1202)},  # Table 6
    **{f"plain{d}": {"depth": d, "stem": "cifar", "shortcut": "none"} for d in (20, 32, 44, 56)},  # Fig. 6
    # Identity Mappings Sec. 4: full pre-activation, projections where the shape changes.
    **{f"r{d}-full_preact-B": {"depth": d, "stem": "cifar", "unit": "full_preact", "shortcut": "B"} for d in (20, 110)},
    **{
        f"r{d}-full_preact-B": {
            "depth": d,
            "block": "bottleneck",
            "stem": "cifar",
            "unit": "full_preact",
            "shortcut": "B",
        }
        for d in (164, 1001)
    },
}


def build(name: str, **kwargs: Any) -> ResNet:
    """A net of ``PAPER_NETS`` by name; ``kwargs`` override its arguments. CIFAR nets get 10 classes."""
    if name not in PAPER_NETS:
        raise ValueError(f"unknown net {name!r}; choose from {', '.join(PAPER_NETS)}")
    args = PAPER_NETS[name]
    classes = {"num_classes": 10} if args.get("stem") == "cifar" else {}
    return ResNet(**{**args, **classes, **kwargs})


# The function names of torchvision and of earlier versions of this file.


def resnet18(**kwargs: Any) -> ResNet:
    return ResNet(**{"depth": 18, **kwargs})


def resnet34(**kwargs: Any) -> ResNet:
    return ResNet(**{"depth": 34, **kwargs})


def resnet50(**kwargs: Any) -> ResNet:
    return ResNet(**{"depth": 50, **kwargs})


def resnet101(**kwargs: Any) -> ResNet:
    return ResNet(**{"depth": 101, **kwargs})


def resnet152(**kwargs: Any) -> ResNet:
    return ResNet(**{"depth": 152, **kwargs})


def plain_resnet18(**kwargs: Any) -> ResNet:
    """ResNet paper Table 2 "plain-18": the same net with no shortcuts."""
    return resnet18(**{"shortcut": "none", **kwargs})


def plain_resnet34(**kwargs: Any) -> ResNet:
    return resnet34(**{"shortcut": "none", **kwargs})


def cifar_resnet(depth: int, block: str = "basic", **kwargs: Any) -> ResNet:
    """ResNet paper Sec. 4.2: 3x3 stem, 16/32/64 channels, option A, 10 classes."""
    return ResNet(**{"depth": depth, "block": block, "stem": "cifar", "num_classes": 10, **kwargs})


def cifar_plain(depth: int, **kwargs: Any) -> ResNet:
    """The plain twin of ``cifar_resnet`` (Fig. 6 left)."""
    return cifar_resnet(depth, **{"shortcut": "none", **kwargs})


def preact_resnet(depth: int, block: str = "bottleneck", **kwargs: Any) -> ResNet:
    """Identity Mappings Sec. 4: full pre-activation CIFAR nets, e.g. 164 and 1001 (9n+2).

    Projection shortcuts (B) where the shape changes, as in the paper's code.
    """
    return cifar_resnet(depth, block, **{"unit": "full_preact", "shortcut": "B", **kwargs})
