import re
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from src.models import resnet as R
from src.models.resnet import BasicBlock, Bottleneck, Projection, ResNet, ZeroPadShortcut

Block = BasicBlock | Bottleneck


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def blocks(stage: object) -> list[Block]:
    """The blocks of a stage, typed: ``net.layerN`` is registered by name, so mypy only sees a Module."""
    assert isinstance(stage, R.Stage)
    out = []
    for blk in stage:
        assert isinstance(blk, BasicBlock | Bottleneck)
        out.append(blk)
    return out


def tiny(**kwargs) -> ResNet:
    args = dict(block="basic", depth=[1, 2], widths=[8, 16], stem="cifar", num_classes=5, in_channels=1)
    return ResNet(**{**args, **kwargs})


# --- torchvision interop -------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_state_dict_loads_strict_and_outputs_match(depth: int) -> None:
    theirs = getattr(torchvision.models, f"resnet{depth}")().eval()
    ours = getattr(R, f"resnet{depth}")().eval()
    assert n_params(ours) == n_params(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


# --- the five unit orderings (Identity Mappings Fig. 4) ------------------------------


def identity_block(block_cls: type[Block], unit: str) -> Block:
    planes = 4
    inplanes = planes * block_cls.expansion
    blk = block_cls(inplanes, planes, unit=unit, downsample=nn.Identity())
    return blk.eval()


def zero_last_bn(blk: R.ResidualBlock) -> None:
    _, bns = blk.layers()
    nn.init.zeros_(bns[-1].weight)
    nn.init.zeros_(bns[-1].bias)


@pytest.mark.parametrize("block_cls", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("unit", ["full_preact", "relu_only_preact"])
def test_preact_units_with_zeroed_last_bn_return_their_input_exactly(block_cls: type[Block], unit: str) -> None:
    blk = identity_block(block_cls, unit)
    zero_last_bn(blk)
    x = torch.randn(2, blk.conv1.in_channels, 8, 8)  # negative values too: no ReLU on the path
    with torch.no_grad():
        assert torch.equal(blk(x), x)


@pytest.mark.parametrize("block_cls", [BasicBlock, Bottleneck])
def test_original_unit_with_zeroed_last_bn_returns_relu_of_input(block_cls: type[Block]) -> None:
    blk = identity_block(block_cls, "original")
    zero_last_bn(blk)
    x = torch.randn(2, blk.conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(blk(x), torch.relu(x))


@pytest.mark.parametrize("block_cls", [BasicBlock, Bottleneck])
def test_relu_before_add_branch_is_non_negative(block_cls: type[Block]) -> None:
    blk = identity_block(block_cls, "relu_before_add").train()
    x = torch.randn(4, blk.conv1.in_channels, 8, 8)
    with torch.no_grad():
        branch = blk(x) - x
    assert (branch >= -1e-6).all()
    assert (branch > 0).any()  # and not trivially zero
    # (original ends in a ReLU after the add, so its output is >= 0; this one is not)
    assert (blk(x) < 0).any()


@pytest.mark.parametrize("block_cls", [BasicBlock, Bottleneck])
def test_bn_after_add_normalises_the_sum(block_cls: type[Block]) -> None:
    blk = identity_block(block_cls, "bn_after_add").train()
    convs, bns = blk.layers()
    seen: dict[str, torch.Tensor] = {}
    convs[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("branch", o))
    # clone: the ReLU after it works in place
    bns[-1].register_forward_hook(lambda m, i, o: seen.update(bn_in=i[0].clone(), bn_out=o.clone()))
    x = torch.randn(8, blk.conv1.in_channels, 8, 8) * 3 + 2
    with torch.no_grad():
        out = blk(x)
    # the last BN sees the sum of branch and shortcut, and its output is the pre-ReLU result
    torch.testing.assert_close(seen["bn_in"], seen["branch"] + x)
    assert torch.equal(out, torch.relu(seen["bn_out"]))
    mean = seen["bn_out"].mean(dim=(0, 2, 3))
    std = seen["bn_out"].std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-3, rtol=0)


@pytest.mark.parametrize("unit", list(R.UNITS))
def test_preact_nets_end_with_bn_relu_and_drop_stem_activation(unit: str) -> None:
    net = tiny(unit=unit).eval()
    preact = unit in R.PREACT_UNITS
    final = list(net.final_norm.children())
    if preact:
        assert [type(m) for m in final] == [nn.BatchNorm2d, nn.ReLU]
        assert isinstance(net.relu, nn.Identity)  # the first unit activates the stem output
        assert isinstance(net.bn1, nn.Identity) == (unit == "full_preact")
        with torch.no_grad():
            assert (net.forward_features(torch.randn(2, 1, 16, 16)) >= 0).all()
    else:
        assert final == [] and isinstance(net.relu, nn.ReLU) and isinstance(net.bn1, nn.BatchNorm2d)


@pytest.mark.parametrize("unit", [u for u in R.UNITS if u != "relu_before_add"])
def test_zero_init_residual_makes_every_block_its_shortcut(unit: str) -> None:
    net = tiny(unit=unit, shortcut="B", zero_init_residual=True).eval()
    for blk in [*blocks(net.layer1), *blocks(net.layer2)]:
        assert blk.downsample is not None  # option B: an identity or a projection in every block
        x = torch.randn(2, blk.conv1.in_channels, 8, 8)
        with torch.no_grad():
            pre = blk.bn1(x).relu() if unit == "full_preact" else x.relu() if unit == "relu_only_preact" else x
            expected = blk.downsample(pre if blk.preact_shortcut else x)
            if unit == "bn_after_add":
                expected = torch.relu(blk.layers()[1][-1](expected))
            elif unit == "original":
                expected = torch.relu(expected)
            torch.testing.assert_close(blk(x), expected)


def test_zero_init_residual_is_refused_for_relu_before_add() -> None:
    with pytest.raises(ValueError, match="relu_before_add"):
        tiny(unit="relu_before_add", zero_init_residual=True)


# --- shortcut options A / B / C / none ------------------------------------------------


def shortcuts(net: ResNet) -> list[nn.Module | None]:
    return [blk.downsample for stage in net.stages for blk in blocks(stage)]


def test_option_a_has_no_parameters_and_zero_pads_channels() -> None:
    sc = ZeroPadShortcut(16, 32, stride=2)
    assert n_params(sc) == 0
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 16:], torch.zeros(2, 16, 4, 4))
    net = R.cifar_resnet(20)
    assert sum(isinstance(s, ZeroPadShortcut) for s in shortcuts(net)) == 2  # the two stage transitions
    assert not any(isinstance(s, Projection) for s in shortcuts(net))
    # option A adds nothing over the plain twin: the ResNet paper's "no extra parameter"
    assert n_params(net) == n_params(R.cifar_plain(20))


@pytest.mark.parametrize(("build", "projections"), [(R.resnet18, 3), (R.resnet50, 4)])
def test_option_b_projects_only_where_shape_changes(build, projections: int) -> None:
    with torch.device("meta"):
        net = build()
    scs = shortcuts(net)
    assert sum(isinstance(s, Projection) for s in scs) == projections
    assert all(isinstance(s, nn.Identity) for s in scs if not isinstance(s, Projection))


def test_option_c_projects_in_every_block_and_none_adds_nothing() -> None:
    c, b, plain = tiny(shortcut="C"), tiny(shortcut="B"), tiny(shortcut="none")
    assert all(isinstance(s, Projection) for s in shortcuts(c))
    assert all(s is None for s in shortcuts(plain))
    assert n_params(c) > n_params(b) > n_params(plain)
    # a plain block is only its branch: with the last BN zeroed it outputs relu(0) = 0
    blk = blocks(plain.layer1)[0].eval()
    zero_last_bn(blk)
    with torch.no_grad():
        assert torch.equal(blk(torch.randn(2, 8, 8, 8)), torch.zeros(2, 8, 8, 8))


def test_stride_in_1x1_moves_the_stride() -> None:
    v15, v1 = R.resnet50(), R.resnet50(stride_in_1x1=True)
    b15, b1 = blocks(v15.layer2)[0], blocks(v1.layer2)[0]
    assert (b15.conv1.stride, b15.conv2.stride) == ((1, 1), (2, 2))
    assert (b1.conv1.stride, b1.conv2.stride) == ((2, 2), (1, 1))


# --- paper numbers and the whole grid -------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "paper_m", "digits"),
    [(20, 0.27, 2), (32, 0.46, 2), (44, 0.66, 2), (56, 0.85, 2), (110, 1.7, 1), (1202, 19.4, 1)],
)
def test_cifar_param_counts_match_resnet_paper_table6(depth: int, paper_m: float, digits: int) -> None:
    with torch.device("meta"):
        net = R.cifar_resnet(depth)
    assert round(n_params(net) / 1e6, digits) == paper_m
    assert net.conv1.kernel_size == (3, 3) and net.fc.out_features == 10


@pytest.mark.parametrize(("depth", "paper_m"), [(164, 1.7), (1001, 10.3)])
def test_preact_bottleneck_param_counts(depth: int, paper_m: float) -> None:
    with torch.device("meta"):
        net = R.preact_resnet(depth)
    assert round(n_params(net) / 1e6, 1) == paper_m  # Identity Mappings Table 3: 1.7M / 10.2M
    assert net.unit == "full_preact" and net.block == "bottleneck"


@pytest.mark.parametrize("block", R.BLOCKS)
@pytest.mark.parametrize("unit", list(R.UNITS))
@pytest.mark.parametrize("shortcut", R.SHORTCUTS)
def test_grid_forward_backward(block: str, unit: str, shortcut: str) -> None:
    net = tiny(block=block, unit=unit, shortcut=shortcut)
    x = torch.randn(3, 1, 16, 16)
    y = net(x)
    assert y.shape == (3, 5) and torch.isfinite(y).all()
    y.logsumexp(-1).sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_imagenet_stem_downsamples_by_4_and_cifar_stem_keeps_size() -> None:
    feats = {}
    for stem in R.STEMS:
        net = ResNet(depth=[1], widths=[8], stem=stem, num_classes=3)
        feats[stem] = net.forward_features(torch.randn(1, 3, 32, 32)).shape
    assert feats == {"imagenet": (1, 8, 8, 8), "cifar": (1, 8, 32, 32)}


# --- bad arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block": "wide"}, "block='wide' is not one of basic, bottleneck"),
        ({"unit": "foo"}, "unit='foo' is not one of original, bn_after_add, relu_before_add"),
        ({"shortcut": "D"}, "shortcut='D' is not one of A, B, C, none"),
        ({"stem": "vit"}, "stem='vit' is not one of imagenet, cifar"),
        ({"depth": [2, 2], "widths": [64, 128, 256]}, "must have the same length"),
        ({"depth": [2, 0]}, "depth=[2, 0] must be a non-empty list of positive integers"),
        ({"widths": [-8, 16]}, "widths=[-8, 16]"),
        ({"num_classes": 0}, "num_classes=[0]"),
        ({"depth": []}, "depth=[]"),
    ],
)
def test_bad_arguments_name_key_value_and_choices(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        tiny(**kwargs)


@pytest.mark.parametrize(
    ("build", "depth", "form"),
    [(R.cifar_resnet, 21, "6n+2"), (R.cifar_plain, 8 + 1, "6n+2"), (R.preact_resnet, 100, "9n+2")],
)
def test_preset_depth_must_fit_formula(build, depth: int, form: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"depth={depth} is not of the form {form}")):
        build(depth)


@pytest.mark.parametrize(
    ("shortcut", "taps"),
    [
        # The first unit after the stem reads the pre-activated stem output (the stem has no BN-ReLU of
        # its own in a pre-activation net); projections read it too; identity shortcuts read the raw x.
        ("B", [True, False, True, False, True, False]),
        ("A", [True, False, False, False, False, False]),  # option A: no projection anywhere
        ("C", [True, True, True, True, True, True]),  # a projection in every unit
    ],
)
def test_preact_shortcut_taps_are_pinned(shortcut: R.ShortcutName, taps: list[bool]) -> None:
    net = R.ResNet(
        block="basic", depth=[2, 2, 2], widths=[4, 8, 16], stem="cifar", unit="full_preact", shortcut=shortcut
    )
    assert [blk.preact_shortcut for layer in (net.layer1, net.layer2, net.layer3) for blk in blocks(layer)] == taps


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("unit", ["original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact"])
def test_stochastic_depth_drops_residual_branches_per_image_in_training_only(block: str, unit: str) -> None:
    args: dict[str, Any] = dict(
        block=block, depth=[2, 2], widths=[8, 16], stem="cifar", unit=unit, shortcut="B", num_classes=5
    )
    torch.manual_seed(0)
    net = ResNet(**args, drop_path_rate=0.5)
    plain = ResNet(**args)
    plain.load_state_dict(net.state_dict())  # no new parameters or buffers: checkpoints stay compatible
    probs = [m.drop_path.p for m in net.modules() if isinstance(m, R.ResidualBlock) and m.drop_path is not None]
    assert probs == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5])  # linear in depth, up to the rate

    x = torch.randn(1, 3, 16, 16).expand(16, 3, 16, 16).contiguous()  # 16 copies of one image
    net.eval(), plain.eval()
    assert torch.equal(net(x), plain(x))  # evaluation keeps every branch (no rescaling needed: "row" mode)
    net.train()
    out = net(x)
    # Identical images, identical batch statistics: only their own branch draws can set them apart.
    assert len({tuple(row.tolist()) for row in out.round(decimals=5)}) > 1
    plain.train()
    assert len({tuple(row.tolist()) for row in plain(x).round(decimals=5)}) == 1


def test_stochastic_depth_needs_shortcuts_and_a_rate_below_one() -> None:
    with pytest.raises(ValueError, match=r"drop_path_rate=0\.1 needs shortcuts"):
        R.cifar_plain(20, drop_path_rate=0.1)
    with pytest.raises(ValueError, match=r"drop_path_rate=1.0 must be in \[0, 1\)"):
        R.cifar_resnet(20, drop_path_rate=1.0)


# --- depth rules and names -------------------------------------------------------------


@pytest.mark.parametrize("depth", sorted(R.IMAGENET_DEPTHS))
def test_imagenet_depth_picks_the_papers_block_and_stages(depth: int) -> None:
    with torch.device("meta"):
        net = ResNet(depth=depth)
    block, stages = R.IMAGENET_DEPTHS[depth]
    assert (net.block, [len(s) for s in net.stages], net.depth, net.name) == (block, stages, depth, f"r{depth}")
    assert net.shortcut == "B" and net.fc.in_features == (512 if block == "basic" else 2048)


def test_cifar_depth_rule_and_defaults() -> None:
    net = ResNet(depth=56, stem="cifar", num_classes=10)
    assert [len(s) for s in net.stages] == [9, 9, 9] and net.shortcut == "A" and net.fc.in_features == 64
    with torch.device("meta"):
        deep = ResNet(depth=164, block="bottleneck", stem="cifar", unit="full_preact", shortcut="B")
    assert [len(s) for s in deep.stages] == [18, 18, 18] and deep.name == "r164-full_preact-B"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 20}, "depth=20 is not an ImageNet depth (18, 34, 50, 101, 152)"),
        ({"depth": 50, "block": "basic"}, "depth=50 is a bottleneck net (ResNet paper Table 1), not block='basic'"),
        ({"depth": 21, "stem": "cifar"}, "depth=21 is not of the form 6n+2 required by block='basic'"),
    ],
)
def test_depth_rules_refuse_other_depths(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ResNet(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"depth": 8, "stem": "cifar"}, "r8"),
        ({"depth": 8, "stem": "cifar", "unit": "full_preact", "shortcut": "B"}, "r8-full_preact-B"),
        ({"depth": 20, "stem": "cifar", "shortcut": "none"}, "plain20"),
        ({"depth": 34, "shortcut": "A"}, "r34-A"),
        ({"depth": [2, 2, 2, 2], "unit": "bn_after_add"}, "r18-bn_after_add"),
    ],
)
def test_name_omits_the_default_unit_and_shortcut(kwargs: dict, name: str) -> None:
    with torch.device("meta"):
        assert ResNet(**kwargs).name == name


@pytest.mark.parametrize("name", list(R.PAPER_NETS))
def test_paper_nets_are_named_by_their_own_name(name: str) -> None:
    with torch.device("meta"):
        net = R.build(name)
    assert net.name == name and net.describe()["name"] == name


def test_each_unit_is_one_forward_function() -> None:
    """The table, not the unit string, decides what a block runs: swapping its entry changes the output."""
    blk = identity_block(BasicBlock, "original")
    assert isinstance(blk, BasicBlock)
    x = torch.randn(2, blk.conv1.in_channels, 8, 8)
    with torch.no_grad():
        before = blk(x)
        blk.run_unit = R.UNITS["relu_before_add"]
        assert not torch.equal(blk(x), before)
        assert torch.equal(blk(x), R.relu_before_add(blk, x))
