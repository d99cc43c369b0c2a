"""RandAugment, TrivialAugmentWide and random erasing for a whole batch, each image with its own draws.

torchvision's v2 transforms draw their random parameters once per call: given a batch, every image
gets the same op, magnitude and rectangle. ``on_device`` augments whole batches, so here each image
draws its own, and the batch is transformed with tensor ops only (no Python loop over images, no
host sync). The op table and the magnitudes are read from torchvision's own transforms, and each op
reproduces torchvision's uint8 kernel, so an image comes out as ``v2.RandAugment`` would have made it
with the same draws (``tests/data/test_batched_augment.py`` compares them op by op).
"""

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as nnf
from torchvision.transforms import v2
from torchvision.transforms.functional import _get_inverse_affine_matrix
from torchvision.transforms.v2 import functional as F

Policy = Literal["randaugment", "trivialaugment"]
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def _inverse_affine(op: str, magnitude: float, height: int, width: int) -> list[float]:
    """The sampling matrix torchvision's ``_AutoAugmentBase`` builds for one geometric op (its centres)."""
    if op in ("ShearX", "ShearY"):  # sheared about the top-left corner, as TF's AutoAugment does
        shear = math.degrees(math.atan(magnitude))
        center = [-width * 0.5, -height * 0.5]
        shears = [shear, 0.0] if op == "ShearX" else [0.0, shear]
        return _get_inverse_affine_matrix(center, 0.0, [0.0, 0.0], 1.0, shears)
    if op in ("TranslateX", "TranslateY"):
        shift = [float(int(magnitude)), 0.0] if op == "TranslateX" else [0.0, float(int(magnitude))]
        return _get_inverse_affine_matrix([0.0, 0.0], 0.0, shift, 1.0, [0.0, 0.0])
    if op == "Rotate":  # F.rotate passes -angle to the affine matrix
        return _get_inverse_affine_matrix([0.0, 0.0], -magnitude, [0.0, 0.0], 1.0, [0.0, 0.0])
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


# Each follows torchvision's uint8 kernel (transforms/v2/functional/_color.py, _geometry.py) with a
# per-image parameter ``p[name][i]`` instead of one Python float.
Kernel = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(x1: torch.Tensor, x2: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvision's ``_blend``: factor * x1 + (1 - factor) * x2, clamped, truncated to uint8."""
    out = torch.addcmul(x1.float() * _per_image(p["factor"]), x2, _per_image(p["one_minus_factor"]))
    return out.clamp_(0, 255).to(torch.uint8)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """The float grey image, floored as torchvision does for uint8; a one-channel image as it is."""
    return F.rgb_to_grayscale(x.float()).floor_() if x.shape[-3] == 3 else x.float()


def _geometric(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Shear, translate, rotate: a nearest-neighbour ``grid_sample`` with each image's matrix, fill 0."""
    b, _, h, w = x.shape
    base = torch.ones(h, w, 3, device=x.device)
    base[..., 0] = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=x.device)
    base[..., 1] = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=x.device).unsqueeze(-1)
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(p["theta"]).view(b, h, w, 2)
    moved = nnf.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return moved.round_().to(torch.uint8)


def _brightness(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return (x.float() * _per_image(p["factor"])).clamp_(0, 255).to(torch.uint8)


def _color(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return _blend(x, _gray(x), p)


def _contrast(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), p)


def _sharpness(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """x + (1 - factor) * (smoothed - x) inside a 1-px border, smoothed by torchvision's 3x3 kernel."""
    c = x.shape[-3]
    kernel = torch.full((3, 3), 1.0 / 13.0, device=x.device)
    kernel[1, 1] = 5.0 / 13.0
    xf = x.float()
    smooth = xf.clone()
    smooth[..., 1:-1, 1:-1] = nnf.conv2d(xf, kernel.expand(c, 1, 3, 3), groups=c).round_()
    return torch.addcmul(xf, smooth - xf, _per_image(p["one_minus_factor"])).clamp_(0, 255).to(torch.uint8)


def _posterize(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Keep the top ``bits`` bits: x & (256 - 2^(8 - bits))."""
    # clamped: in the whole-batch path images that drew another op carry other magnitudes
    return x & (256 - torch.pow(2.0, 8 - _per_image(p["magnitude"]))).clamp_(0, 255).to(torch.uint8)


def _solarize(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.where(x.float() >= _per_image(p["threshold"]), 255 - x, x)


def check_augmentation(random_erasing: float, randaugment_magnitude: int) -> None:
    """The augmentation keys every image DataModule takes, checked before training; errors name the key."""
    if not 0 <= random_erasing <= 1:
        raise ValueError(f"random_erasing={random_erasing} must be a probability in [0, 1]")
    if not 0 <= randaugment_magnitude <= 30:
        raise ValueError(f"randaugment_magnitude={randaugment_magnitude} must be in [0, 30]")


def per_image_policy(policy: str, magnitude: int) -> list[v2.Transform]:
    """torchvision's per-image transform for ``policy`` (the DataLoader paths): the twin of
    ``BatchedAutoAugment``, on one uint8 image; none for ``"none"``."""
    if policy == "randaugment":
        return [v2.RandAugment(num_ops=2, magnitude=magnitude)]
    if policy == "trivialaugment":
        return [v2.TrivialAugmentWide()]
    return []


class BatchedAutoAugment:
    """``v2.RandAugment(num_ops, magnitude)`` or ``v2.TrivialAugmentWide()`` on a uint8 batch ``[B, C, H, W]``.

    Per image and per round: an op uniformly from torchvision's table, its magnitude (RandAugment: the
    fixed bin ``magnitude``; TrivialAugment: a uniform bin of 31) and, for signed ops, a sign. The five
    geometric ops share one ``grid_sample`` (each image its own matrix); each op then transforms the
    images that drew it (see ``apply``).
    """

    num_bins = 31

    def __init__(self, policy: Policy, num_ops: int = 2, magnitude: int = 9) -> None:
        if policy not in ("randaugment", "trivialaugment"):
            raise ValueError(f"policy={policy!r}: expected 'randaugment' or 'trivialaugment'")
        if not 0 <= magnitude < self.num_bins:
            raise ValueError(f"magnitude={magnitude} must be in [0, {self.num_bins})")
        self.policy, self.magnitude = policy, magnitude
        self.num_ops = num_ops if policy == "randaugment" else 1
        # The class, not its table of lambdas, so that a loader holding this still pickles.
        self.source = v2.RandAugment if policy == "randaugment" else v2.TrivialAugmentWide
        self.ops = tuple(self.source._AUGMENTATION_SPACE)
        self._tables: dict[tuple[int, int, torch.device], dict[str, torch.Tensor]] = {}

    def tables(self, height: int, width: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Per (op, bin, sign): the magnitude, its blend weights and the affine ``theta``, built once per size.

        The weights are computed in double precision and then rounded, as torchvision's Python floats are,
        so that ``factor * x + (1 - factor) * y`` rounds the same way.
        """
        key = (height, width, device)
        if key not in self._tables:
            n_ops, n_bins = len(self.ops), self.num_bins
            magnitude = torch.zeros(n_ops, n_bins, 2, dtype=torch.float64)
            theta = torch.zeros(n_ops, n_bins, 2, 2, 3, dtype=torch.float64)
            for k, op in enumerate(self.ops):
                magnitudes_fn, signed = self.source._AUGMENTATION_SPACE[op]
                values = magnitudes_fn(n_bins, height, width)
                for b in range(n_bins):
                    m = 0.0 if values is None else float(values[b])
                    for s, sign in enumerate((1.0, -1.0 if signed else 1.0)):
                        magnitude[k, b, s] = sign * m
                        theta[k, b, s] = torch.tensor(_inverse_affine(op, sign * m, height, width)).view(2, 3)
            factor = 1.0 + magnitude
            self._tables[key] = {
                "magnitude": magnitude.to(device, torch.float32),
                "factor": factor.to(device, torch.float32),
                "one_minus_factor": (1.0 - factor).to(device, torch.float32),
                "threshold": (255.0 * magnitude).to(device, torch.float32),  # Solarize: 255 * fraction
                # rescaled as torchvision's _affine_grid does, then transposed for the bmm below
                "theta": (theta.float().transpose(-1, -2) / torch.tensor([0.5 * width, 0.5 * height])).to(device),
            }
        return self._tables[key]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"expected a uint8 batch [B, C, H, W], got {x.dtype} {tuple(x.shape)}")
        b, dev = len(x), x.device
        for _ in range(self.num_ops):
            op = torch.randint(0, len(self.ops), (b,), device=dev, generator=generator)
            if self.policy == "randaugment":
                bin_ = torch.full((b,), self.magnitude, device=dev)
            else:
                bin_ = torch.randint(0, self.num_bins, (b,), device=dev, generator=generator)
            sign = (torch.rand(b, device=dev, generator=generator) <= 0.5).long()  # torchvision: negative if <= 0.5
            x = self.apply(x, op, bin_, sign)
        return x

    def apply(
        self, x: torch.Tensor, op: torch.Tensor, bin_: torch.Tensor, sign: torch.Tensor, subsets: bool | None = None
    ) -> torch.Tensor:
        """One round: image i gets op ``self.ops[op[i]]`` at magnitude bin ``bin_[i]``, negated if ``sign[i]``.

        ``subsets`` (default: on CPU) transforms only the images that drew each op, which needs the op
        counts on the host; on an accelerator that would be a sync per op, so there each op transforms
        the whole batch and is kept where drawn (``torch.where``). Both give the same images.
        """
        b, c, h, w = x.shape
        t = self.tables(h, w, x.device)
        at = (op, bin_, sign)
        params = {k: t[k][at] for k in ("factor", "one_minus_factor", "magnitude", "threshold", "theta")}
        subsets = x.device.type == "cpu" if subsets is None else subsets
        out = x.clone()
        for names, kernel in self._kernels(c, h, w):
            drawn = torch.zeros_like(op, dtype=torch.bool)
            for name in names:
                drawn |= op == self.ops.index(name)
            if subsets:
                idx = drawn.nonzero().squeeze(1)
                if len(idx):
                    out[idx] = kernel(x[idx], {k: v[idx] for k, v in params.items()})
            else:
                out = torch.where(drawn.view(b, 1, 1, 1), kernel(x, params), out)
        return out

    def _kernels(self, c: int, h: int, w: int) -> list[tuple[tuple[str, ...], Kernel]]:
        """(ops, kernel) pairs; a kernel maps uint8 images and their per-image parameters to uint8 images."""
        kernels: list[tuple[tuple[str, ...], Kernel]] = [
            (GEOMETRIC, _geometric),
            (("Brightness",), _brightness),
            (("Contrast",), _contrast),
            (("Posterize",), _posterize),
            (("Solarize",), _solarize),
            (("AutoContrast",), lambda x, p: F.autocontrast(x)),  # per image and channel already
            (("Equalize",), lambda x, p: F.equalize(x)),
        ]
        if c == 3:  # adjust_saturation leaves a one-channel image as it is
            kernels.append((("Color",), _color))
        if h > 2 and w > 2:  # adjust_sharpness leaves images of 2 px or less as they are
            kernels.append((("Sharpness",), _sharpness))
        return kernels


def batched_random_erasing(
    x: torch.Tensor,
    p: float,
    value: float = 0.0,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``v2.RandomErasing(p, scale, ratio, value)`` with each image drawing its own rectangle.

    As torchvision: with probability ``p`` an image tries up to 10 (area, aspect ratio) draws and erases
    the first rectangle that fits, at a uniform position; if none fits it is left as it is.
    """
    b, _, h, w = x.shape
    dev, tries = x.device, 10
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, tries, device=dev, generator=generator))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(b, tries, device=dev, generator=generator))
    eh, ew = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
    fits = (eh < h) & (ew < w)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting try
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    erase = (torch.rand(b, device=dev, generator=generator) < p) & fits.any(dim=1)
    top = (torch.rand(b, device=dev, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(b, device=dev, generator=generator) * (w - ew + 1)).long()
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # [B, W]
    mask = erase[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(mask[:, None], value)
