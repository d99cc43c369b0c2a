"""One configurable ResNet for the whole family of the two papers.

He et al., "Deep Residual Learning for Image Recognition" (2015) and
"Identity Mappings in Deep Residual Networks" (2016). Pure torch: no Lightning here.

Vocabulary (every name is a constructor argument of ``ResNet``):

============  ==================================================================
block         ``basic`` (two 3x3 convs, expansion 1) | ``bottleneck`` (1x1-3x3-1x1,
              expansion 4)
depths        blocks per stage, e.g. [3, 4, 23, 3]; the stage count follows its length
widths        base channels per stage ([64,128,256,512] ImageNet, [16,32,64] CIFAR)
stem          ``imagenet`` 7x7/2 conv-BN-ReLU + 3x3/2 max-pool | ``cifar`` 3x3 conv-BN-ReLU
unit          Identity Mappings Fig. 4:
              (a) ``original``          conv-BN-ReLU-conv-BN, add, ReLU
              (b) ``bn_after_add``      conv-BN-ReLU-conv, add, BN, ReLU
              (c) ``relu_before_add``   conv-BN-ReLU-conv-BN-ReLU, add
              (d) ``relu_only_preact``  ReLU-conv-BN-ReLU-conv-BN, add
              (e) ``full_preact``       BN-ReLU-conv-BN-ReLU-conv, add
shortcut      ``A`` identity, zero-padded channels + strided subsampling where the
              shape changes (no parameters) | ``B`` 1x1 conv(+BN) projection only
              where the shape changes | ``C`` projection in every block |
              ``none`` no shortcut at all (the plain nets of the degradation study)
drop_path_rate  stochastic depth (Huang et al. 2016): each training image skips a
              block's residual branch with probability rising linearly from 0 in
              the first block to this rate in the last; 0 (default) = off
============  ==================================================================

Where the arguments match torchvision's resnet18...152 (block per depth, unit
``original``, shortcut ``B``, imagenet stem, stride on the 3x3 conv) the parameter
names are torchvision's, so its ``state_dict`` loads with ``strict=True``.
"""

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

__all__ = [
    "ResNet",
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
UNITS = ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")
SHORTCUTS = ("A", "B", "C", "none")
STEMS = ("imagenet", "cifar")
PREACT_UNITS = ("relu_only_preact", "full_preact")


def _check_choice(key: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _check_positive(key: str, values: Sequence[int]) -> None:
    if not values or any(not isinstance(v, int) or v <= 0 for v in values):
        raise ValueError(f"{key}={list(values)!r} must be a non-empty list of positive integers")


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


class ResidualBlock(nn.Module):
    """The five unit orderings over a chain of convs; subclasses only build the convs.

    ``convs`` is the residual branch, and ``bns[i]`` is the BN that belongs to
    ``convs[i]``: after it in post-activation units, before it in ``full_preact``
    (so it has the conv's input width). In ``bn_after_add`` the last BN normalises
    the sum.
    """

    expansion = 1

    def __init__(self, unit: str, downsample: nn.Module | None, preact_shortcut: bool) -> None:
        super().__init__()
        self.unit = unit
        self.downsample = downsample
        # Identity Mappings, Sec. 4.1: projections (and the first unit after the stem)
        # take the pre-activated input; identity shortcuts take the raw one.
        self.preact_shortcut = preact_shortcut
        self.relu = nn.ReLU(inplace=True)
        # Stochastic depth on the residual branch, per image ("row"); set by ResNet, None when off.
        self.drop_path: StochasticDepth | None = None

    def layers(self) -> tuple[list[nn.Conv2d], list[nn.BatchNorm2d]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convs, bns = self.layers()
        unit, last = self.unit, len(convs) - 1

        if unit == "full_preact":  # (e) BN-ReLU-conv, repeated
            out = pre = self.relu(bns[0](x))
            for i, conv in enumerate(convs):
                out = conv(out if i == 0 else self.relu(bns[i](out)))
        elif unit == "relu_only_preact":  # (d) ReLU-conv-BN, repeated
            out = pre = F.relu(x)  # not in place: x is still the identity path
            for i, conv in enumerate(convs):
                out = bns[i](conv(out if i == 0 else self.relu(out)))
        else:  # (a) (b) (c) conv-BN-ReLU, repeated; they differ only at the end
            out = pre = x
            for i, conv in enumerate(convs):
                out = conv(out)
                if i < last or unit != "bn_after_add":
                    out = bns[i](out)
                if i < last or unit == "relu_before_add":
                    out = self.relu(out)

        if self.drop_path is not None:  # where the branch ends, before the add (in every unit ordering)
            out = self.drop_path(out)
        if self.downsample is not None:
            out = out + self.downsample(pre if self.preact_shortcut else x)
        if unit == "bn_after_add":
            out = self.relu(bns[last](out))
        elif unit == "original":
            out = self.relu(out)
        return out

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
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__(unit, downsample, preact_shortcut)
        del stride_in_1x1  # there is no 1x1 conv here; accepted for a shared signature
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


class ResNet(nn.Module):
    """A ResNet built from arguments; see the module docstring for the vocabulary.

    Pre-activation units (d, e) drop the stem's ReLU (and for (e) its BN too): the
    first unit applies them before splitting into its two paths. Those nets end
    with BN + ReLU before pooling, since their last sum is not normalised.
    """

    def __init__(
        self,
        block: BlockName = "basic",
        depths: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: StemName = "imagenet",
        unit: UnitName = "original",
        shortcut: ShortcutName = "B",
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_choice("block", block, BLOCKS)
        _check_choice("stem", stem, STEMS)
        _check_choice("unit", unit, UNITS)
        _check_choice("shortcut", shortcut, SHORTCUTS)
        _check_positive("depths", depths)
        _check_positive("widths", widths)
        _check_positive("num_classes", [num_classes])
        _check_positive("in_channels", [in_channels])
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f"drop_path_rate={drop_path_rate} must be in [0, 1)")
        if drop_path_rate and shortcut == "none":
            raise ValueError(
                f"drop_path_rate={drop_path_rate} needs shortcuts: with shortcut='none' a dropped branch is the block"
            )
        if len(depths) != len(widths):
            raise ValueError(
                f"depths={list(depths)} and widths={list(widths)} must have the same length (one entry per stage)"
            )
        block_cls: type[BasicBlock | Bottleneck] = BasicBlock if block == "basic" else Bottleneck
        preact = unit in PREACT_UNITS
        self.block, self.unit, self.shortcut = block, unit, shortcut
        self.inplanes = widths[0]

        # Stem; names follow torchvision (conv1, bn1, relu, maxpool).
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_channels, self.inplanes)
        self.bn1 = nn.Identity() if unit == "full_preact" else nn.BatchNorm2d(self.inplanes)
        self.relu = nn.Identity() if preact else nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        self.stages: list[str] = []
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            name = f"layer{i + 1}"
            stage = self._make_layer(block_cls, width, depth, 1 if i == 0 else 2, unit, shortcut, stride_in_1x1, i == 0)
            self.add_module(name, stage)
            self.stages.append(name)

        self.num_features = self.inplanes
        self.final_norm: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(self.inplanes), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

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
            blocks = [m for m in self.modules() if isinstance(m, ResidualBlock)]
            for i, m in enumerate(blocks):
                m.drop_path = StochasticDepth(drop_path_rate * i / max(len(blocks) - 1, 1), mode="row")

    def _make_layer(
        self,
        block_cls: type["BasicBlock | Bottleneck"],
        planes: int,
        blocks: int,
        stride: int,
        unit: str,
        shortcut: str,
        stride_in_1x1: bool,
        first_stage: bool,
    ) -> nn.Sequential:
        preact = unit in PREACT_UNITS
        layers = []
        for j in range(blocks):
            s = stride if j == 0 else 1
            outplanes = planes * block_cls.expansion
            downsample = make_shortcut(shortcut, self.inplanes, outplanes, s, preact)
            projection = isinstance(downsample, Projection)
            layers.append(
                block_cls(
                    self.inplanes,
                    planes,
                    s,
                    unit=unit,
                    downsample=downsample,
                    preact_shortcut=preact and (projection or (first_stage and j == 0)),
                    stride_in_1x1=stride_in_1x1,
                )
            )
            self.inplanes = outplanes
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.final_norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# Presets: argument bundles, no logic beyond checking the depth formula.


def resnet18(**kwargs) -> ResNet:
    return ResNet(**{"block": "basic", "depths": [2, 2, 2, 2], **kwargs})


def resnet34(**kwargs) -> ResNet:
    return ResNet(**{"block": "basic", "depths": [3, 4, 6, 3], **kwargs})


def resnet50(**kwargs) -> ResNet:
    return ResNet(**{"block": "bottleneck", "depths": [3, 4, 6, 3], **kwargs})


def resnet101(**kwargs) -> ResNet:
    return ResNet(**{"block": "bottleneck", "depths": [3, 4, 23, 3], **kwargs})


def resnet152(**kwargs) -> ResNet:
    return ResNet(**{"block": "bottleneck", "depths": [3, 8, 36, 3], **kwargs})


def plain_resnet18(**kwargs) -> ResNet:
    """ResNet paper Table 2 "plain-18": the same net with no shortcuts."""
    return resnet18(**{"shortcut": "none", **kwargs})


def plain_resnet34(**kwargs) -> ResNet:
    return resnet34(**{"shortcut": "none", **kwargs})


def cifar_depths(depth: int, block: str = "basic") -> list[int]:
    """Blocks per stage of a 3-stage CIFAR net: 6n+2 layers (basic) or 9n+2 (bottleneck)."""
    _check_choice("block", block, BLOCKS)
    per_block = 2 if block == "basic" else 3
    n, rest = divmod(depth - 2, 3 * per_block)
    if rest or n < 1:
        raise ValueError(
            f"depth={depth} is not of the form {3 * per_block}n+2 required by block={block!r} "
            f"(e.g. {', '.join(str(3 * per_block * k + 2) for k in (3, 5, 7, 9, 18))})"
        )
    return [n, n, n]


def cifar_resnet(depth: int, block: str = "basic", **kwargs) -> ResNet:
    """ResNet paper Sec. 4.2: 3x3 stem, 16/32/64 channels, option A, 10 classes."""
    args = {"depths": cifar_depths(depth, block), "widths": [16, 32, 64], "stem": "cifar", "shortcut": "A"}
    return ResNet(**{"block": block, **args, "num_classes": 10, **kwargs})


def cifar_plain(depth: int, **kwargs) -> ResNet:
    """The plain twin of ``cifar_resnet`` (Fig. 6 left)."""
    return cifar_resnet(depth, **{"shortcut": "none", **kwargs})


def preact_resnet(depth: int, block: str = "bottleneck", **kwargs) -> ResNet:
    """Identity Mappings Sec. 4: full pre-activation CIFAR nets, e.g. 164 and 1001 (9n+2).

    Projection shortcuts (B) where the shape changes, as in the paper's code.
    """
    return cifar_resnet(depth, block, **{"unit": "full_preact", "shortcut": "B", **kwargs})
