"""An ImageFolder tree of ImageNet-like JPEGs, for measuring and testing the ImageNet loader.

A loader's cost is mostly JPEG decoding, which depends on the pixel count and on how much detail
the entropy coder has to undo: flat colours decode faster than photographs and noise slower. So the
images are cut from natural photographs that a package ships (scikit-image's sample data in the dev
extra; else the one photo matplotlib ships), at ILSVRC-2012's common sizes and quality ~90, with a
few greyscale files (the train split holds about 1-2% of them).

    python -m src.data.jpeg_fixture OUT_DIR --classes 10 --per-class 50
"""

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

# (width, height, weight): ILSVRC-2012's most common sizes (landscape 4:3, portrait 3:4, 3:2) and a few larger
SIZES = ((500, 375, 0.45), (375, 500, 0.2), (500, 333, 0.2), (500, 500, 0.05), (800, 600, 0.05), (1024, 768, 0.05))
GREY_FRACTION = 0.03
SKIMAGE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "grass.png", "gravel.png", "brick.png", "camera.png",
    "moon.png", "coins.png", "horse.png",
)  # fmt: skip


def photos() -> tuple[str, list[Image.Image]]:
    """The source photographs as RGB images, and where they come from."""
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        found = [folder / name for name in SKIMAGE_PHOTOS if (folder / name).exists()]
        if found:
            return f"scikit-image {getattr(skimage, '__version__', '?')}", [Image.open(p).convert("RGB") for p in found]
    except ImportError:
        pass
    import matplotlib

    path = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    return f"matplotlib {matplotlib.__version__} (grace_hopper.jpg)", [Image.open(path).convert("RGB")]


def photo_like(source: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random window of ``source`` (at least half its shorter side), flipped at random, resized to ``size``."""
    w, h = source.size
    side = rng.uniform(0.5, 1.0) * min(w, h)
    aspect = size[0] / size[1]
    cw, ch = min(w, side * aspect**0.5), min(h, side / aspect**0.5)
    left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    img = source.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def write_tree(
    root: Path, classes: int = 10, per_class: int = 50, val_per_class: int = 10, seed: int = 0, quality: int = 90
) -> dict:
    """``root/{train,val}/nXXXXXXXX/*.JPEG``; returns what was written (source, count, bytes)."""
    source, pics = photos()
    rng = np.random.default_rng(seed)
    weights = np.array([s[2] for s in SIZES])
    count = grey = total = 0
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                w, h, _ = SIZES[rng.choice(len(SIZES), p=weights / weights.sum())]
                img = photo_like(pics[rng.integers(len(pics))], (w, h), rng)
                if rng.random() < GREY_FRACTION:
                    img, grey = img.convert("L"), grey + 1
                path = folder / f"n{c:08d}_{j}.JPEG"
                img.save(path, format="JPEG", quality=quality)
                count, total = count + 1, total + os.path.getsize(path)
    return {"source": source, "images": count, "greyscale": grey, "mean_kb": total / max(1, count) / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_tree(args.out, args.classes, args.per_class, args.val_per_class, args.seed))


if __name__ == "__main__":
    main()
