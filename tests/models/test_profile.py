import pytest
import torch
from torch import nn

from src.models import resnet as R
from src.models.profile import count_macs, count_params, main, preset_table, profile
from tests.conftest import REPO


def conv_weights(block: nn.Module) -> int:
    return sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))


def test_seed_arithmetic_from_real_blocks() -> None:
    # 1x1x256x64 + 3x3x64x64 + 1x1x64x256 = 69,632 (a 256-d bottleneck of ResNet-50/101/152) ...
    assert conv_weights(R.Bottleneck(256, 64)) == 69_632
    # ... against two 3x3x256x256 convs = 1,179,648: 16.94x more
    two_3x3 = R.BasicBlock(256, 256)
    assert conv_weights(two_3x3) == 1_179_648
    assert conv_weights(two_3x3) / 69_632 == pytest.approx(16.94, abs=0.005)
    # 3x3x64x64 + 3x3x64x64 = 73,728 (a 64-d basic block of ResNet-18/34)
    assert conv_weights(R.BasicBlock(64, 64)) == 73_728


@pytest.mark.parametrize(("depth", "paper_gmacs"), [(18, 1.8), (34, 3.6), (50, 4.1), (101, 7.8), (152, 11.3)])
def test_imagenet_flops_match_the_papers_within_3_percent(depth: int, paper_gmacs: float) -> None:
    with torch.device("meta"):
        net = getattr(R, f"resnet{depth}")()
    gmacs = count_macs(net, (3, 224, 224)) / 1e9
    assert gmacs == pytest.approx(paper_gmacs, rel=0.03)


def test_counts_follow_the_network_not_a_formula() -> None:
    net = R.cifar_resnet(20)
    assert count_params(net) == 269_722
    # every conv of a 32x32 CIFAR net: stem 3x3x3x16 at 32x32, then stages at 32, 16, 8
    macs = count_macs(net, (3, 32, 32))
    assert macs == pytest.approx(40.8e6, rel=0.01)
    assert count_macs(net, (3, 64, 64)) == pytest.approx(4 * macs, rel=0.01)  # conv cost ~ pixels


def test_table_covers_every_paper_net(capsys: pytest.CaptureFixture) -> None:
    main([])
    out = capsys.readouterr().out
    for name in R.PAPER_NETS:
        assert f"| {name} |" in out
    assert "| r50 | bottleneck | [3,4,6,3] | original | B | 25.56 | 4.089 | 224x224 |" in out
    assert "| r164-full_preact-B | bottleneck | [18,18,18] | full_preact | B | 1.70 | 0.248 | 32x32 |" in out


def test_readme_shows_the_current_table() -> None:
    table = preset_table([profile(n) for n in R.PAPER_NETS])
    assert table in (REPO / "README.md").read_text(), "README's model table is stale: python -m src.models.profile"


def test_unknown_net_is_named(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["r51"])
    assert "unknown net(s) r51" in capsys.readouterr().err


@pytest.mark.parametrize(("depth", "ours", "paper_gmacs"), [(50, 3.86, 3.8), (101, 7.57, 7.6), (152, 11.28, 11.3)])
def test_paper_v1_stride_in_1x1_flops_match_the_papers(depth: int, ours: float, paper_gmacs: float) -> None:
    # The paper's v1 puts the stride on the first 1x1 conv; the 3x3 then runs at the lower resolution.
    with torch.device("meta"):
        net = getattr(R, f"resnet{depth}")(stride_in_1x1=True)
    gmacs = count_macs(net, (3, 224, 224)) / 1e9
    assert gmacs == pytest.approx(ours, abs=0.005)
    assert gmacs == pytest.approx(paper_gmacs, rel=0.02)
