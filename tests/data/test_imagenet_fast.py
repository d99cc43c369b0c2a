"""The crop-first ImageNet train pipeline draws what the per-image torchvision recipe draws, on real JPEGs."""

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from src.data.imagenet import ClassFolder, CorruptImageError, ImageNetDataModule, workers_per_process
from src.data.imagenet_fast import (
    CropDecoder,
    JpegWindow,
    collate_bytes,
    decode_crops,
    random_resized_window,
    scale_window,
)
from src.data.jpeg_fixture import photo_like, photos, write_tree


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov D: the largest gap between the two empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


N = 3000
KS_CRITICAL = 1.95 * (2 / N) ** 0.5  # alpha = 0.001 for two samples of N
SIZES = ((500, 375), (375, 500), (500, 333), (1024, 768))


def reference_scale_box(w: int, h: int, low: int = 256, high: int = 480, size: int = 224) -> tuple[float, ...]:
    """The window that v2.RandomShortestSize + v2.RandomCrop cut, in source pixels, from their own make_params."""
    img = tv_tensors.Image(torch.empty(3, h, w, dtype=torch.uint8))
    new_h, new_w = v2.RandomShortestSize(list(range(low, high + 1))).make_params([img])["size"]
    crop = v2.RandomCrop(size).make_params([tv_tensors.Image(torch.empty(3, new_h, new_w, dtype=torch.uint8))])
    fx, fy = w / new_w, h / new_h
    return crop["left"] * fx, crop["top"] * fy, (crop["left"] + size) * fx, (crop["top"] + size) * fy


def reference_rrc_box(w: int, h: int) -> tuple[float, ...]:
    p = v2.RandomResizedCrop(224).make_params([tv_tensors.Image(torch.empty(3, h, w, dtype=torch.uint8))])
    return p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"]


def statistics_of(boxes: Sequence[tuple[tuple[float, ...], tuple[int, int]]]) -> dict[str, np.ndarray]:
    """Crop scale (window side / shorter side), aspect (width / height) and relative position of each window."""
    b = np.array([box for box, _ in boxes])
    wh = np.array([size for _, size in boxes], dtype=np.float64)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    slack_x, slack_y = np.maximum(wh[:, 0] - bw, 1e-9), np.maximum(wh[:, 1] - bh, 1e-9)
    return {
        "scale": np.sqrt(bw * bh) / wh.min(axis=1),
        "aspect": bw / bh,
        "x": np.clip(b[:, 0] / slack_x, 0, 1),
        "y": np.clip(b[:, 1] / slack_y, 0, 1),
    }


@pytest.mark.parametrize("crop", ["scale", "random_resized"])
def test_crop_windows_follow_the_reference_distribution(crop: str) -> None:
    """KS test on crop scale, aspect and position: independent draws of ours and of torchvision's transforms."""
    torch.manual_seed(0)
    sizes = [SIZES[i % len(SIZES)] for i in range(N)]
    if crop == "scale":
        ours = [(scale_window(w, h, (256, 480), 224), (w, h)) for w, h in sizes]
        ref = [(reference_scale_box(w, h), (w, h)) for w, h in sizes]
    else:
        ours = [(random_resized_window(Image.new("L", (w, h))), (w, h)) for w, h in sizes]
        ref = [(reference_rrc_box(w, h), (w, h)) for w, h in sizes]
    a, b = statistics_of(ours), statistics_of(ref)
    ds = {k: ks_statistic(a[k], b[k]) for k in a}
    assert max(ds.values()) < KS_CRITICAL, (ds, KS_CRITICAL)
    if crop == "scale":  # and the test can tell: a range 10% narrower is detected
        torch.manual_seed(1)
        narrow = statistics_of([(scale_window(w, h, (256, 456), 224), (w, h)) for w, h in sizes])
        assert ks_statistic(narrow["scale"], b["scale"]) > KS_CRITICAL


def test_same_seed_same_windows_as_the_reference() -> None:
    for w, h in SIZES:
        torch.manual_seed(w)
        ours = [scale_window(w, h, (256, 480), 224) for _ in range(50)]
        torch.manual_seed(w)
        assert ours == [reference_scale_box(w, h) for _ in range(50)]


@pytest.fixture(scope="module")
def photo_jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    _, pics = photos()
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate(SIZES):
        path = folder / f"{i}.JPEG"
        photo_like(pics[i % len(pics)], size, rng).save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def reference_crop(path: Path, recipe: v2.Compose, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    with Image.open(path) as img:
        return np.asarray(recipe(img.convert("RGB")), dtype=np.int16)


def ours_crop(path: Path, decoder: CropDecoder, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    return decoder(str(path)).permute(1, 2, 0).numpy().astype(np.int16)


def test_crop_then_resize_matches_resize_then_crop(photo_jpegs: list[Path]) -> None:
    """Same draws, same filter taps: the window resized alone equals the whole image resized, then cropped."""
    scale = v2.Compose([v2.RandomShortestSize(list(range(256, 481))), v2.RandomCrop(224), v2.RandomHorizontalFlip()])
    for path in photo_jpegs:
        for seed in range(3):
            diff = np.abs(
                reference_crop(path, scale, seed) - ours_crop(path, CropDecoder("scale", 224, draft=False), seed)
            )
            assert diff.mean() < 0.5 and diff.max() <= 3, (path, seed, diff.mean(), diff.max())


def test_dct_scaled_decode_stays_close_where_the_crop_downscales_2x(photo_jpegs: list[Path]) -> None:
    rrc = v2.Compose([v2.RandomResizedCrop(64), v2.RandomHorizontalFlip()])
    big = photo_jpegs[-1]  # 1024x768: a 64-pixel crop of most windows is a 2x-8x downscale
    diffs = [
        np.abs(reference_crop(big, rrc, s) - ours_crop(big, CropDecoder("random_resized", 64), s)) for s in range(20)
    ]
    plain = [np.abs(reference_crop(big, rrc, s) - ours_crop(big, CropDecoder("random_resized", 64, draft=False), s))
             for s in range(20)]  # fmt: skip
    assert max(d.mean() for d in plain) < 0.5
    assert max(d.mean() for d in diffs) < 3.0, [round(float(d.mean()), 2) for d in diffs]


def test_flip_is_drawn_with_probability_one_half(photo_jpegs: list[Path]) -> None:
    decoder = CropDecoder("scale", 224, (256, 256))
    torch.manual_seed(0)
    path = str(photo_jpegs[0])
    flipped = 0
    for _ in range(400):
        state = torch.get_rng_state()
        x = decoder(path)
        torch.set_rng_state(state)
        scale_window(500, 375, (256, 256), 224)  # replay the window draws, then read the flip draw
        flipped += bool(torch.rand(1) < 0.5)
        assert x.shape == (3, 224, 224)
    assert 160 < flipped < 240  # binomial(400, 0.5): mean 200, sd 10


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_tree(root, classes=2, per_class=6, val_per_class=2)
    return root


def test_fast_pipeline_equals_per_image_on_the_same_draws(photo_tree: Path) -> None:
    """Without lighting (its noise is drawn elsewhere), the fast pipeline's output is the per-image recipe's."""
    kw = {"data_dir": str(photo_tree), "batch_size": 4, "num_workers": 0, "val_size": 0, "lighting_std": 0.0}
    for normalize in ("per_channel", "per_pixel_mean"):
        extra = {"normalize": normalize, "mean_image": str(photo_tree / f"mean-{normalize}.pt")}
        slow, fast = (ImageNetDataModule(**kw, **extra, train_pipeline=p) for p in ("per_image", "fast"))  # type: ignore[arg-type]
        slow.setup("fit")
        fast.setup("fit")
        for i in range(len(slow.train_set)):  # type: ignore[arg-type]
            torch.manual_seed(i)
            want = slow.train_set[i][0]  # type: ignore[index]
            torch.manual_seed(i)
            crop = fast.train_set[i][0]  # type: ignore[index]
            got = fast.on_after_batch_transfer((crop[None], torch.zeros(1)), 0)[0][0]
            assert (got - want).abs().mean() < 0.01 and (got - want).abs().max() < 0.1, (normalize, i)


def test_device_part_draws_lighting_and_erasing_per_image(photo_tree: Path) -> None:
    data = ImageNetDataModule(data_dir=str(photo_tree), num_workers=0, val_size=0, random_erasing=1.0)
    crops = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    x, _ = data.on_after_batch_transfer((crops, torch.zeros(64)), 0)
    erased = (x == 0).all(dim=1).flatten(1).float().mean(1)
    assert (erased > 0).all() and erased.std() > 0  # each image its own rectangle
    shift = x.masked_fill(x == 0, float("nan")).nanmean(dim=(2, 3))
    assert shift.std(dim=0).min() > 0.01  # each image its own lighting noise


CMYK, GREY, PNG, TRUNCATED, EMPTY = "cmyk.JPEG", "grey.JPEG", "png.JPEG", "truncated.JPEG", "empty.JPEG"


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ILSVRC-2012's train split really holds: CMYK and greyscale JPEGs, a PNG named .JPEG; and broken files."""
    root = tmp_path_factory.mktemp("bad")
    write_tree(root, classes=1, per_class=4, val_per_class=1)
    folder = root / "train" / "n00000000"
    img = Image.open(next(folder.iterdir())).convert("RGB")
    img.convert("CMYK").save(folder / CMYK, format="JPEG", quality=90)
    img.convert("L").save(folder / GREY, format="JPEG", quality=90)
    img.save(folder / PNG, format="PNG")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    (folder / TRUNCATED).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / EMPTY).write_bytes(b"")
    return root


@pytest.mark.parametrize("pipeline", ["fast", "per_image"])
def test_odd_files_decode_and_broken_ones_name_the_file(bad_tree: Path, pipeline: str) -> None:
    for skip in (False, True):
        data = ImageNetDataModule(data_dir=str(bad_tree), num_workers=0, val_size=0, train_pipeline=pipeline,  # type: ignore[arg-type]
                                  skip_corrupt=skip)  # fmt: skip
        data.setup("fit")
        folder = data.train_set
        assert isinstance(folder, ClassFolder)
        names = [Path(p).name for p, _ in folder.samples]
        for name in (CMYK, GREY, PNG):
            x = folder[names.index(name)][0]
            assert x.shape == (3, 224, 224)
        for name in (TRUNCATED, EMPTY):
            if skip:
                assert folder[names.index(name)] is None
            else:
                with pytest.raises(CorruptImageError, match=f"{name}: cannot decode image"):
                    folder[names.index(name)]
        if skip:
            assert folder.skipped.value == 2
    evaluation = ImageNetDataModule(data_dir=str(bad_tree), num_workers=0, val_size=0)
    folder = evaluation.folder("train", evaluation.eval_transform())  # the eval path, per image as before
    names = [Path(p).name for p, _ in folder.samples]
    assert all(folder[names.index(n)][0].shape == (3, 224, 224) for n in (CMYK, GREY, PNG))
    with pytest.raises(CorruptImageError, match=f"{TRUNCATED}: cannot decode image"):
        folder[names.index(TRUNCATED)]


def test_cmyk_and_grey_crops_match_the_per_image_path(bad_tree: Path) -> None:
    folder = bad_tree / "train" / "n00000000"
    ref = v2.Compose([v2.RandomShortestSize(list(range(256, 481))), v2.RandomCrop(224), v2.RandomHorizontalFlip()])
    for name in (CMYK, GREY, PNG):
        diff = np.abs(reference_crop(folder / name, ref, 0) - ours_crop(folder / name, CropDecoder("scale", 224), 0))
        assert diff.mean() < 0.5, name


def test_default_workers_are_the_cores_per_device_less_one() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    assert workers_per_process(1) == max(1, cores - 1)
    assert workers_per_process(cores) == 1  # never none
    assert workers_per_process(max(1, cores // 2)) == max(1, cores // max(1, cores // 2) - 1)


def test_gpu_decode_is_refused_without_cuda_in_one_line(photo_tree: Path) -> None:
    if torch.cuda.is_available():
        assert ImageNetDataModule(data_dir=str(photo_tree), decode="gpu").decode == "gpu"
        return
    with pytest.raises(ValueError, match=r"^decode='gpu' decodes JPEGs with nvJPEG and needs CUDA.*set decode: cpu$"):
        ImageNetDataModule(data_dir=str(photo_tree), decode="gpu")


def test_gpu_decode_path_on_cpu_crops_what_the_cpu_path_crops(photo_jpegs: list[Path]) -> None:
    """decode: gpu's batch path with the CPU as the device: the same windows and flips, pixels close."""
    window, decoder = JpegWindow("scale", 224), CropDecoder("scale", 224, draft=False)
    for seed in range(3):
        torch.manual_seed(seed)
        samples = [(window(str(p)), 0) for p in photo_jpegs]
        torch.manual_seed(seed)
        want = torch.stack([decoder(str(p)) for p in photo_jpegs])
        got, labels, fallbacks, skipped = decode_crops(collate_bytes(samples), 224, torch.device("cpu"))
        assert got.shape == want.shape and (fallbacks, skipped, labels.tolist()) == (0, 0, [0] * len(photo_jpegs))
        assert (got.float() - want.float()).abs().mean() < 2.0


def test_gpu_decode_falls_back_for_refused_files_and_names_broken_ones(bad_tree: Path) -> None:
    folder = bad_tree / "train" / "n00000000"
    window = JpegWindow("scale", 224)
    samples = [(window(str(folder / name)), 1) for name in (CMYK, GREY, PNG)]
    x, y, fallbacks, skipped = decode_crops(collate_bytes(samples), 224, torch.device("cpu"))
    assert x.shape == (3, 3, 224, 224) and y.tolist() == [1, 1, 1] and fallbacks >= 1 and skipped == 0  # the PNG
    with pytest.raises(CorruptImageError, match=f"{EMPTY}: cannot decode image"):
        window(str(folder / EMPTY))  # the worker reads the header: an empty file fails there, named
