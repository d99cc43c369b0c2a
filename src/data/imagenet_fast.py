"""The ImageNet train path split in two: crop-first JPEG decoding in the workers, the rest batched on the device.

Workers (``CropDecoder``, one call per image): read the JPEG header, draw the crop window exactly as
torchvision's transforms would (the same torch random draws, in the same order), decode with PIL's
DCT scaling when the window is downscaled 2x or more (``Image.draft``: libjpeg decodes at 1/2, 1/4 or
1/8 size), and resize only the window to the output size (``Image.resize(box=...)``: the same filter
taps as resizing the whole image and then cropping, which is what the reference does). Out comes a
uint8 ``[3, size, size]`` tensor, a quarter of the float32 bytes through shared memory.

Device (``DeviceAugment``, one call per batch, in ``on_after_batch_transfer``): RandAugment or
TrivialAugment on the uint8 batch (``batched_augment``), conversion to float, AlexNet lighting,
normalisation and random erasing, each image with its own draws.
"""

import io
import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop, v2
from torchvision.transforms.v2.functional import to_dtype

from src.data.batched_augment import BatchedAutoAugment, Policy, batched_random_erasing

Box = tuple[float, float, float, float]  # left, top, right, bottom in source pixels


def scale_window(width: int, height: int, scale_range: tuple[int, int], size: int) -> Box:
    """v2.RandomShortestSize(range(low, high + 1)) then v2.RandomCrop(size), as a window of the source.

    The same draws as torchvision's ``make_params`` (shorter side, then top, then left), so a seeded
    run crops the same windows as the reference transform would.
    """
    low, high = scale_range
    short = low + int(torch.randint(high - low + 1, ()))
    r = short / min(height, width)
    new_w, new_h = int(width * r), int(height * r)
    top = int(torch.randint(0, new_h - size + 1, ())) if new_h > size else 0
    left = int(torch.randint(0, new_w - size + 1, ())) if new_w > size else 0
    fx, fy = width / new_w, height / new_h
    return left * fx, top * fy, (left + size) * fx, (top + size) * fy


def random_resized_window(img: Image.Image) -> Box:
    """torchvision's RandomResizedCrop window (scale 0.08-1, ratio 3/4-4/3), from its own ``get_params``."""
    top, left, h, w = RandomResizedCrop.get_params(img, [0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0])
    return float(left), float(top), float(left + w), float(top + h)


def draft_request(width: int, height: int, box: Box, size: int) -> tuple[int, int]:
    """The smallest full-image size whose ``box`` still has ``size`` pixels a side: draft() scales down to
    no less than it, so the window is never upsampled by the DCT scaling."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    return math.ceil(width * size / bw), math.ceil(height * size / bh)


class CorruptImageError(OSError):
    """An image file that PIL cannot decode; the message starts with its path."""


class CropDecoder:
    """``path -> uint8 [3, size, size]``: crop window, decode, resize the window, flip, optional colour jitter.

    A DataLoader worker calls it once per image; errors propagate to ``ClassFolder``, which names the file.
    """

    def __init__(
        self,
        crop: Literal["scale", "random_resized"],
        size: int,
        scale_range: tuple[int, int] = (256, 480),
        color_jitter: float = 0.0,
        draft: bool = True,
    ) -> None:
        self.crop, self.size, self.scale_range, self.draft = crop, size, scale_range, draft
        self.jitter = v2.ColorJitter(*(3 * [color_jitter])) if color_jitter else None

    def window(self, img: Image.Image) -> Box:
        w, h = img.size
        return scale_window(w, h, self.scale_range, self.size) if self.crop == "scale" else random_resized_window(img)

    def __call__(self, path: str) -> torch.Tensor:
        try:
            return self.decode(path)
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors name no file: add it
            raise CorruptImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e

    def decode(self, path: str) -> torch.Tensor:
        with open(path, "rb") as f:
            img: Image.Image = Image.open(f)
            box = self.window(img)
            if self.draft and img.format == "JPEG":
                w, h = img.size
                img.draft(img.mode, draft_request(w, h, box, self.size))  # DCT scaling, a no-op below 2x
                sx, sy = img.size[0] / w, img.size[1] / h
                box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            if img.mode not in ("RGB", "L"):  # CMYK, palette, ...: to RGB first, as the reference does
                img = img.convert("RGB")
            img = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        if img.mode != "RGB":  # greyscale resized on one channel, then replicated
            img = img.convert("RGB")
        if torch.rand(1) < 0.5:  # v2.RandomHorizontalFlip's draw
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(self.size, self.size, 3)
        x = x.permute(2, 0, 1).contiguous()
        return self.jitter(x) if self.jitter is not None else x


@dataclass
class DeviceAugment:
    """What follows the crop and flip in the train recipe, on a uint8 batch ``[B, 3, H, W]`` on the device.

    ``mean``/``std`` are ``[3, 1, 1]`` (per channel) or ``[3, H, W]`` and ``1`` (the per-pixel mean image).
    """

    mean: torch.Tensor
    std: torch.Tensor
    eigval: torch.Tensor
    eigvec: torch.Tensor
    lighting_std: float = 0.0
    policy: str = "none"
    magnitude: int = 9
    erasing: float = 0.0

    def __post_init__(self) -> None:
        # built once: it caches its op tables per image size and device
        policy = cast(Policy, self.policy)
        self.batched_policy = BatchedAutoAugment(policy, 2, self.magnitude) if self.policy != "none" else None

    def to(self, device: torch.device) -> "DeviceAugment":
        """Moves the statistics once, not per batch (a copy from pageable memory would wait for the device)."""
        for name in ("mean", "std", "eigval", "eigvec"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.batched_policy is not None:
            x = self.batched_policy(x, generator)
        x = to_dtype(x, torch.float32, scale=True)
        if self.lighting_std:  # AlexNet's PCA noise, alpha ~ N(0, std) per image and component
            alpha = torch.randn(len(x), 3, device=x.device, generator=generator) * self.lighting_std
            x = x + ((alpha * self.eigval) @ self.eigvec.T)[:, :, None, None]
        x = (x - self.mean) / self.std
        if self.erasing:  # erased pixels become 0: the mean, once normalised
            x = batched_random_erasing(x, self.erasing, value=0.0, generator=generator)
        return x


class JpegWindow(CropDecoder):
    """``path -> (file bytes, [left, top, right, bottom, flip], path)`` for ``decode: gpu``: the worker reads
    the header for the size and draws the window and flip as ``CropDecoder`` does; the main process decodes."""

    def decode(self, path: str) -> tuple[torch.Tensor, torch.Tensor, str]:  # type: ignore[override]
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as img:
            box = self.window(img)
        flip = float(torch.rand(1) < 0.5)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), torch.tensor([*box, flip]), path


@dataclass
class JpegBatch:
    """A batch for ``decode: gpu``: file bytes of many lengths, their windows and flips, paths and labels."""

    data: list[torch.Tensor]
    params: torch.Tensor  # [B, 5]: left, top, right, bottom, flip
    paths: list[str]
    labels: torch.Tensor


def collate_bytes(batch: list[Any]) -> JpegBatch:
    """Bytes stay a list (the main process hands them to the decoder); skipped samples are dropped."""
    kept = [s for s in batch if s is not None]
    params = torch.stack([s[0][1] for s in kept])
    return JpegBatch([s[0][0] for s in kept], params, [s[0][2] for s in kept], torch.tensor([s[1] for s in kept]))


def decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 images; on CUDA with nvJPEG. One function, so that the decoder can follow torchvision's
    (its image decoders are deprecated from 0.29 in favour of TorchCodec's ``decode_jpeg(..., device=)``)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))


def _pil_rgb(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    with Image.open(io.BytesIO(data.numpy().tobytes())) as pil:
        return torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1).to(device)


def decode_crops(
    batch: JpegBatch, size: int, device: torch.device, skip_corrupt: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The batch as uint8 crops ``[B, 3, size, size]`` on ``device`` and their labels; how many files the
    device decoder refused (CMYK JPEGs, PNG bytes) and PIL decoded instead; how many were skipped."""
    from torchvision.transforms.v2 import functional as F

    fallbacks = 0
    try:
        images: list[torch.Tensor | None] = list(decode_jpegs(batch.data, device))
    except RuntimeError:  # one refused file fails the batch call: decode one by one
        images = []
        for d, path in zip(batch.data, batch.paths, strict=True):
            try:
                images.append(decode_jpegs([d], device)[0])
                continue
            except RuntimeError:
                fallbacks += 1
            try:
                images.append(_pil_rgb(d, device))
            except (OSError, SyntaxError, ValueError) as e:
                if not skip_corrupt:
                    raise CorruptImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
                images.append(None)
    keep = [i for i, image in enumerate(images) if image is not None]
    crops = []
    for i in keep:
        image = images[i]
        assert image is not None
        left, top, right, bottom, flip = batch.params[i].tolist()
        t, lft = round(top), round(left)
        crop = F.resized_crop(image, t, lft, max(1, round(bottom) - t), max(1, round(right) - lft), [size, size],
                              antialias=True)  # fmt: skip
        crops.append(crop.flip(-1) if flip else crop)
    return torch.stack(crops), batch.labels[keep], fallbacks, len(images) - len(keep)
