"""The ImageNet train loader resumes mid-epoch exactly (src/data/resume.py), on an ImageFolder of real JPEGs:
the resumed loader serves the rest of the epoch's samples, by index, with the very same augmented pixels,
also with another ``num_workers``."""

from pathlib import Path

import pytest
import torch

from src.data.imagenet import ImageNetDataModule
from tests.data.conftest import write_imagefolder


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("imagenet"), train_per_class=8)  # 24 train JPEGs


def dm(root: Path, workers: int) -> ImageNetDataModule:
    """21 train images after 3 held out: 5 batches of 4 (drop_last); small crops keep it quick."""
    data = ImageNetDataModule(
        data_dir=str(root), batch_size=4, num_workers=workers, val_size=3, crop_size=32, scale_range=(36, 48),
        eval_resize=36, lighting_std=0.1,
    )  # fmt: skip
    data.setup("fit")
    return data


def test_imagenet_loader_resumed_mid_epoch_serves_the_rest_by_index_with_the_same_pixels(jpegs: Path) -> None:
    whole = dm(jpegs, workers=0)
    order = [i for batch in whole.train_dataloader().batch_sampler for _, i in batch]  # type: ignore[union-attr]
    assert sorted(order) == sorted(order[:20]) and len(set(order)) == 20  # a shuffle, each sample once
    uninterrupted = list(whole.train_dataloader())

    first = dm(jpegs, workers=0)
    it = iter(first.train_dataloader())
    head = [next(it), next(it)]
    state = first.state_dict()  # what a checkpoint after step 2 holds
    assert state["train_loader"]["epoch"] == 0 and state["train_loader"]["batch"] == 2
    assert state["classes"] == first.classes

    for workers in (0, 2):
        probe = dm(jpegs, workers)
        probe.load_state_dict(state)
        rest_order = [i for batch in probe.train_dataloader().batch_sampler for _, i in batch]  # type: ignore[union-attr]
        assert rest_order == order[8:]  # by index: the samples not yet served, in the uninterrupted order
        resumed = dm(jpegs, workers)
        resumed.load_state_dict(state)
        rest = list(resumed.train_dataloader())
        assert len(head) + len(rest) == len(uninterrupted) == 5
        for (x, y), (x_ref, y_ref) in zip(head + rest, uninterrupted, strict=True):
            assert torch.equal(y, y_ref) and torch.equal(x, x_ref)
        assert resumed.state_dict()["train_loader"]["epoch"] == 1  # served to its end: the next epoch from batch 0
