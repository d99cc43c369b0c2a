"""ImageNet (ILSVRC-2012) from an ImageFolder tree, with the ResNet paper's recipe.

``data_dir`` holds ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the official validation
images sorted into class folders, e.g. with the widely used ``valprep.sh``). The class index is
the sorted list of ``train/`` folders; ``val/`` uses that same mapping, and the mapping is saved
with the run (``classes.json`` in the run directory and the checkpoint's DataModule state).

Train (He et al. 2015, Sec. 3.4): the shorter side resized to a random length in [256, 480]
("scale augmentation"), a random 224x224 crop, horizontal flip, AlexNet's PCA colour
("lighting") noise and the per-pixel mean subtracted (``normalize: per_pixel_mean``: the mean 224x224
image of the training split, computed once and cached) or per-channel normalisation (``per_channel``,
the torchvision convention, the default); or ``train_crop: random_resized`` for the
later, common RandomResizedCrop recipe. Beyond the paper, for modern recipes ("ResNet strikes back"):
``train_size`` (train at a lower resolution than the test's ``crop_size``), ``auto_augment``
(RandAugment or TrivialAugmentWide after the crop and flip) and ``random_erasing`` (after
normalising). ``train_pipeline: fast`` (the default) decodes only what the crop needs in the
workers and ships uint8 crops; the rest of the recipe runs batched on the training device
(``src/data/imagenet_fast.py``); ``per_image`` runs the whole recipe per image in the workers. Both draw
the same distribution. Eval: resize 256, center 224; ``ten_crop_test`` gives
``test`` the paper's 10-crop batches ``[B, 10, C, H, W]`` (average the crops' softmax with
``src.models.classifier.multi_crop_probs``).
"""

import hashlib
import json
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset, default_collate
from torchvision import tv_tensors
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from src.choices import check_choices
from src.data.batched_augment import check_augmentation, per_image_policy
from src.data.common import check_batch_sizes, check_one_batch, process_batch, seeded_split
from src.data.imagenet_fast import (
    CorruptImageError,
    CropDecoder,
    DeviceAugment,
    JpegBatch,
    JpegWindow,
    collate_bytes,
    decode_crops,
)
from src.data.resume import ResumableDataLoader, ResumableTrainData, derived_seed, run_seed

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Eigen-decomposition of the RGB covariance of ImageNet pixels (AlexNet Sec. 4.1; the values
# fb.resnet.torch used), in [0, 1] units.
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
LAYOUT = "expected data_dir/train/<class>/*.JPEG and data_dir/val/<class>/*.JPEG"


def load_rgb(path: str) -> Image.Image:
    """PIL's errors (``Truncated File Read``, ``cannot identify image file``) name no file: add it."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")  # decodes now, while the error can still be tied to the path
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def check_layout(root: Path) -> list[str]:
    """The sorted train classes, after checking the tree; every problem names its path."""
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir={root} is not a directory; {LAYOUT}")
    splits: dict[str, list[str]] = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a directory; {LAYOUT}")
        entries = list(os.scandir(folder))
        classes = sorted(e.name for e in entries if e.is_dir())
        if not classes:
            loose = sum(e.is_file() and _is_image(e.name) for e in entries)
            hint = f" ({loose} images lie directly in it: sort them into class folders, e.g. valprep.sh)"
            raise FileNotFoundError(f"{folder} has no class folders{hint if loose else ''}; {LAYOUT}")
        for name in classes:
            with os.scandir(folder / name) as it:
                if not any(e.is_file() and _is_image(e.name) for e in it):
                    raise FileNotFoundError(f"{folder / name} holds no image ({', '.join(IMG_EXTENSIONS)})")
        splits[split] = classes
    unknown = sorted(set(splits["val"]) - set(splits["train"]))
    if unknown:
        raise ValueError(f"{root / 'val' / unknown[0]}: class not in {root / 'train'} ({len(unknown)} such classes)")
    return splits["train"]


class ClassFolder(ImageFolder):
    """ImageFolder with a given class list (val must use train's mapping) and file-naming decode errors.

    With ``skip_corrupt`` an undecodable image becomes ``None`` (dropped by ``collate_skipping``)
    and is counted in ``skipped``, shared by the DataLoader worker processes.
    """

    def __init__(
        self, root: Path, classes: list[str], transform: Any, skip_corrupt: bool = False, loader: Any = load_rgb
    ) -> None:
        self.given_classes = classes
        # allow_empty: a class may have no val images (check_layout already rejected empty folders)
        super().__init__(str(root), transform=transform, loader=loader, allow_empty=True)
        self.skip_corrupt = skip_corrupt
        self.skipped = multiprocessing.Value("i", 0)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return self.given_classes, {name: i for i, name in enumerate(self.given_classes)}

    def __getitem__(self, index: int) -> Any:
        try:
            return super().__getitem__(index)
        except CorruptImageError as e:
            if not self.skip_corrupt:
                raise
            with self.skipped.get_lock():
                self.skipped.value += 1
                count = self.skipped.value
            log.warning("skip_corrupt: skipped %s (%d skipped so far)", e, count)
            return None


def collate_skipping(batch: list[Any]) -> Any:
    """default_collate without the samples that ClassFolder skipped."""
    return default_collate([sample for sample in batch if sample is not None])


class Lighting(v2.Transform):
    """AlexNet's PCA colour augmentation: add ``eigvec @ (alpha * eigval)``, alpha ~ N(0, std), per image."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = PCA_EIGVEC @ (alpha * PCA_EIGVAL)
        return tv_tensors.wrap(inpt + rgb.view(3, 1, 1).to(inpt), like=inpt)


class TenCropStack:
    """Resize, then the four corner and the center crops and their flips, as one ``[10, C, H, W]`` tensor."""

    def __init__(self, resize: int, crop: int, to_tensor: v2.Compose) -> None:
        self.crops = v2.Compose([v2.Resize(resize), v2.TenCrop(crop)])
        self.to_tensor = to_tensor

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.stack([self.to_tensor(crop) for crop in self.crops(img)])


class SubtractImage:
    """``x - mean`` for a ``[C, H, W]`` mean image (the paper's per-pixel mean subtraction)."""

    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


def workers_per_process(devices: int = 1) -> int:
    """This process's share of the usable cores, less one for the training process itself."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return max(1, cores // max(1, devices) - 1)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-template"


class ImageNetDataModule(ResumableTrainData, L.LightningDataModule):
    """ILSVRC-2012 (or any ImageFolder tree): train on ``train/``, validate on a held-out part of it,
    test on ``val/``.

    The official test labels are not public, so ``val/`` (50k images) serves as the test split, as in
    the ResNet paper's tables. Model selection (the "best" checkpoint, the plateau schedule) must not
    see it: ``val_size`` images of ``train/``, drawn with ``seed``, are held out for validation and
    evaluated with the test transform. ``val_size: 0`` validates on ``val/`` itself, the common but
    optimistic shortcut; the CLI then reports the last checkpoint, not the "best" one. ``test`` uses
    10-crop if ``ten_crop_test``. ``global_batch_size`` fixes the batch per optimizer step (the
    paper's 256 on any GPU count); an explicit per-process ``batch_size`` wins; with neither, 32 per process.
    The layout is checked when the DataModule is built, so a wrong path fails before training.

    ``normalize: per_pixel_mean`` subtracts the mean image of ``mean_image_samples`` training images
    (seeded, never the held-out or test ones; resize ``eval_resize``, center ``crop_size``, in [0, 1]).
    It is computed once, in ``prepare_data``, and kept in ``mean_image`` (default: a file in
    ``$XDG_CACHE_HOME/resnet-template`` named after the tree and these settings).
    """

    def __init__(
        self,
        data_dir: str = "data/imagenet",
        batch_size: int | None = None,
        train_crop: Literal["scale", "random_resized"] = "scale",
        scale_range: tuple[int, int] = (256, 480),
        crop_size: int = 224,
        train_size: int | None = None,
        eval_resize: int = 256,
        lighting_std: float = 0.1,
        color_jitter: float = 0.0,
        auto_augment: Literal["none", "randaugment", "trivialaugment"] = "none",
        randaugment_magnitude: int = 9,
        random_erasing: float = 0.0,
        normalize: Literal["per_channel", "per_pixel_mean"] = "per_channel",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        mean_image: str | None = None,
        mean_image_samples: int = 10_000,
        ten_crop_test: bool = False,
        val_size: int = 10_000,
        seed: int = 0,
        global_batch_size: int | None = None,
        skip_corrupt: bool = False,
        train_pipeline: Literal["fast", "per_image"] = "fast",
        decode: Literal["cpu", "gpu"] = "cpu",
        num_workers: int | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
    ) -> None:
        super().__init__()
        check_choices(ImageNetDataModule.__init__, locals())
        train_size = crop_size if train_size is None else train_size
        if not train_size <= scale_range[0] <= scale_range[1]:
            raise ValueError(
                f"scale_range={list(scale_range)} must be ordered and start at >= the train crop ({train_size})"
            )
        if normalize == "per_pixel_mean" and train_size != crop_size:
            raise ValueError(
                f"normalize='per_pixel_mean' subtracts a {crop_size}x{crop_size} mean image, which a train_size="
                f"{train_size} crop cannot use: set normalize: per_channel or train_size: {crop_size}"
            )
        check_augmentation(random_erasing, randaugment_magnitude)
        if decode == "gpu" and not torch.cuda.is_available():
            raise ValueError("decode='gpu' decodes JPEGs with nvJPEG and needs CUDA, which this machine lacks: "
                             "set decode: cpu")  # fmt: skip
        if decode == "gpu" and train_pipeline != "fast":
            raise ValueError(f"decode='gpu' needs train_pipeline='fast' (got {train_pipeline!r})")
        if eval_resize < crop_size:
            raise ValueError(f"eval_resize={eval_resize} must be >= crop_size={crop_size}")
        for key, value in dict(
            crop_size=crop_size, train_size=train_size, mean_image_samples=mean_image_samples
        ).items():
            if value <= 0:
                raise ValueError(f"{key}={value} must be positive")
        if val_size < 0:
            raise ValueError(f"val_size={val_size} must be >= 0 (0 validates on val/, the test split)")
        check_batch_sizes(batch_size, global_batch_size)
        self.save_hyperparameters()
        self.root = Path(data_dir).expanduser()
        self.classes = check_layout(self.root)
        self.batch_size_arg, self.batch_size = batch_size, process_batch(batch_size, global_batch_size, None, 32)
        self.skip_corrupt, self.ten_crop_test = skip_corrupt, ten_crop_test
        self.val_size, self.seed, self.global_batch_size = val_size, seed, global_batch_size
        self.train_crop, self.scale_range, self.crop_size = train_crop, scale_range, crop_size
        self.train_size = train_size
        self.auto_augment, self.randaugment_magnitude = auto_augment, randaugment_magnitude
        self.random_erasing = random_erasing
        self.eval_resize, self.lighting_std, self.color_jitter = eval_resize, lighting_std, color_jitter
        self.mean, self.std = list(mean), list(std)
        self.normalize, self.mean_image_samples = normalize, mean_image_samples
        self.mean_image_path = Path(mean_image).expanduser() if mean_image else self._default_mean_image_path()
        self.pixel_mean: torch.Tensor | None = None  # [3, crop, crop], loaded in setup (per_pixel_mean)
        self.train_pipeline, self.decode = train_pipeline, decode
        self.gpu_fallbacks = 0  # files nvJPEG refused (CMYK, PNG bytes), decoded by PIL instead
        self.device_augment: DeviceAugment | None = None  # fast: built in setup, moved to the device once
        self._aug_generator: tuple[torch.device, torch.Generator] | None = None
        self.num_workers = num_workers  # None: workers_per_process() for the devices of this node
        self.pin_memory, self.persistent_workers, self.prefetch_factor = pin_memory, persistent_workers, prefetch_factor
        self.train_set: ClassFolder | Subset | None = None
        self.val_set: ClassFolder | Subset | None = None
        self.test_set: ClassFolder | None = None

    @property
    def val_is_test(self) -> bool:
        """Whether validation runs on the test split (``val_size: 0``): a "best" checkpoint is then biased."""
        return not self.val_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def image_size(self) -> int:
        """The side of the images the network sees (the model summary's example input)."""
        return self.crop_size

    def _normalization(self) -> Any:
        if self.normalize == "per_channel":
            return v2.Normalize(self.mean, self.std)
        if self.pixel_mean is None:
            self.pixel_mean = self.load_mean_image()
        return SubtractImage(self.pixel_mean)

    def _to_tensor(self) -> v2.Compose:
        return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), self._normalization()])

    def _default_mean_image_path(self) -> Path:
        key = f"{self.root.resolve()}|{self.crop_size}|{self.eval_resize}|{self.mean_image_samples}|{self.seed}"
        key += f"|{self.val_size}"  # the held-out images are never part of the mean
        return cache_dir() / f"imagenet-mean-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"

    def _train_indices(self, n: int) -> torch.Tensor:
        return seeded_split(n, self.val_size, self.seed)[0] if self.val_size else torch.arange(n)

    def load_mean_image(self) -> torch.Tensor:
        """The cached per-pixel mean ``[3, crop, crop]``; computed and saved (atomically) the first time."""
        path = self.mean_image_path
        if path.exists():
            mean = torch.load(path, map_location="cpu", weights_only=True)
            if mean.shape != (3, self.crop_size, self.crop_size):
                raise ValueError(f"mean_image {path} has shape {list(mean.shape)}, expected [3, {self.crop_size}, "
                                 f"{self.crop_size}] for crop_size={self.crop_size}")  # fmt: skip
            return mean
        plain = v2.Compose([v2.Resize(self.eval_resize), v2.CenterCrop(self.crop_size), v2.ToImage(),
                            v2.ToDtype(torch.float32, scale=True)])  # fmt: skip
        train = self.folder("train", plain)
        idx = self._train_indices(len(train))
        pick = torch.randperm(len(idx), generator=torch.Generator().manual_seed(self.seed))[: self.mean_image_samples]
        loader: DataLoader = DataLoader(Subset(train, idx[pick].tolist()), batch_size=64, num_workers=self.workers(),
                            collate_fn=collate_skipping)  # fmt: skip
        total, count = torch.zeros(3, self.crop_size, self.crop_size, dtype=torch.float64), 0
        for x, _ in loader:
            total += x.sum(0, dtype=torch.float64)
            count += len(x)
        mean = (total / count).float()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(mean, tmp)
        os.replace(tmp, path)  # other processes see the whole file or none
        log.info("per-pixel mean of %d training images saved to %s", count, path)
        return mean

    def prepare_data(self) -> None:
        if self.normalize == "per_pixel_mean":
            self.load_mean_image()  # once per node, before setup() on every process

    def train_transform(self) -> v2.Compose:
        if self.train_crop == "scale":
            low, high = self.scale_range
            crop: list[v2.Transform] = [
                v2.RandomShortestSize(list(range(low, high + 1))),
                v2.RandomCrop(self.train_size),
            ]
        else:
            crop = [v2.RandomResizedCrop(self.train_size)]
        colour: list[v2.Transform] = [v2.ColorJitter(*(3 * [self.color_jitter]))] if self.color_jitter else []
        colour += per_image_policy(self.auto_augment, self.randaugment_magnitude)  # on the uint8 crop, as in timm
        lighting: list[v2.Transform] = [Lighting(self.lighting_std)] if self.lighting_std else []
        to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        # erased pixels become 0: the mean, once normalised
        erase: list[v2.Transform] = [v2.RandomErasing(p=self.random_erasing, value=0)] if self.random_erasing else []
        return v2.Compose(
            [*crop, v2.RandomHorizontalFlip(), *colour, *to_tensor, *lighting, self._normalization(), *erase]
        )

    def train_folder(self) -> "ClassFolder":
        """``train/`` with the train recipe: per image (``per_image``) or crop-first uint8 crops (``fast``)."""
        if self.train_pipeline == "per_image":
            return self.folder("train", self.train_transform())
        kind = JpegWindow if self.decode == "gpu" else CropDecoder
        decoder = kind(self.train_crop, self.train_size, self.scale_range, self.color_jitter)
        return ClassFolder(self.root / "train", self.classes, None, self.skip_corrupt, loader=decoder)

    def build_device_augment(self) -> DeviceAugment:
        """The rest of the train recipe after the crop, flip and colour jitter, for a uint8 batch."""
        if self.normalize == "per_channel":
            mean, std = torch.tensor(self.mean).view(3, 1, 1), torch.tensor(self.std).view(3, 1, 1)
        else:
            if self.pixel_mean is None:
                self.pixel_mean = self.load_mean_image()
            mean, std = self.pixel_mean, torch.ones(1)
        return DeviceAugment(mean, std, PCA_EIGVAL, PCA_EIGVEC, self.lighting_std, self.auto_augment,
                             self.randaugment_magnitude, self.random_erasing)  # fmt: skip

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``decode: gpu``: the workers sent file bytes and windows; decode and crop them on the device."""
        if not isinstance(batch, JpegBatch):
            return batch
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cuda")
        x, y, fallbacks, skipped = decode_crops(batch, self.train_size, device, self.skip_corrupt)
        self.gpu_fallbacks += fallbacks
        if skipped:
            log.warning("skip_corrupt: skipped %d undecodable images of a batch", skipped)
        return x, y

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Train batches of the fast pipeline arrive as uint8 crops: finish the recipe on the device. Anything
        else passes (float eval batches, and the model summary's example input, a bare tensor)."""
        if not (isinstance(batch, tuple | list) and len(batch) == 2 and batch[0].dtype == torch.uint8):
            return batch
        x, y = batch
        if self.device_augment is None:
            self.device_augment = self.build_device_augment()
        return self.device_augment.to(x.device)(x, self._generator(x.device)), y

    def _generator(self, device: torch.device) -> torch.Generator:
        """Seeded by (seed, epoch, rank, batch), as ``on_device``'s DeviceLoader: a run resumed mid-epoch
        draws the same augmentation for its next batch as the uninterrupted run (Lightning restores the
        epoch loop's batch index from the checkpoint)."""
        trainer = self.trainer
        epoch, rank, batch = (0, 0, 0)
        if trainer is not None:
            epoch, rank, batch = trainer.current_epoch, trainer.global_rank, trainer.fit_loop.epoch_loop.batch_idx
        if self._aug_generator is None or self._aug_generator[0] != device:
            self._aug_generator = (device, torch.Generator(device=device))
        generator = self._aug_generator[1]
        generator.manual_seed(derived_seed(self.seed, epoch, rank, batch))  # a host-side call: no device sync
        return generator

    def workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return workers_per_process(self.trainer.num_devices if self.trainer is not None else 1)

    def eval_transform(self, ten_crop: bool = False) -> Any:
        if ten_crop:
            return TenCropStack(self.eval_resize, self.crop_size, self._to_tensor())
        return v2.Compose([v2.Resize(self.eval_resize), v2.CenterCrop(self.crop_size), self._to_tensor()])

    def setup(self, stage: str | None = None) -> None:
        self.batch_size = process_batch(self.batch_size_arg, self.global_batch_size, self.trainer, 32)
        if stage in ("fit", "validate", None) and (self.train_set is None or self.val_set is None):
            if self.val_size:
                # The same train/ files twice, with the train and the eval transform, split by index.
                train = self.train_folder()
                if self.val_size >= len(train):
                    raise ValueError(
                        f"val_size={self.val_size} must be smaller than the {len(train)} images of "
                        f"{self.root / 'train'} (0 validates on val/)"
                    )
                tr, va = seeded_split(len(train), self.val_size, self.seed)
                self.train_set = Subset(train, tr.tolist())
                self.val_set = Subset(self.folder("train", self.eval_transform()), va.tolist())
            else:
                self.train_set = self.train_folder()
                self.val_set = self.folder("val", self.eval_transform())
        if stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = self.folder("val", self.eval_transform(ten_crop=self.ten_crop_test))
        self.save_classes()

    def folder(self, split: str, transform: Any) -> ClassFolder:
        return ClassFolder(self.root / split, self.classes, transform, self.skip_corrupt)

    def save_classes(self) -> None:
        """Write the class index into the run directory, next to config.yaml (rank 0)."""
        trainer = self.trainer
        # without a logger there is no run directory (log_dir would be the working directory)
        if trainer is None or not trainer.is_global_zero or not trainer.loggers or not trainer.log_dir:
            return
        path = Path(trainer.log_dir) / "classes.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"data_dir": str(self.root), "classes": self.classes}, indent=1))

    def state_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, **super().state_dict()}  # saved in every checkpoint; + the train position

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resuming on a tree with other classes would silently relabel the data: refuse."""
        saved = state_dict.get("classes")
        if saved is not None and list(saved) != self.classes:
            diff = sorted(set(saved) ^ set(self.classes))[:3]
            raise ValueError(
                f"the checkpoint's {len(saved)} classes differ from the {len(self.classes)} in {self.root / 'train'} "
                f"(e.g. {diff or 'same names, other order'})"
            )
        super().load_state_dict(state_dict)

    def teardown(self, stage: str) -> None:
        sets = (self.train_set, self.val_set, self.test_set)
        folders = [d.dataset if isinstance(d, Subset) else d for d in sets if d is not None]
        skipped = sum(f.skipped.value for f in folders if isinstance(f, ClassFolder))
        if skipped:
            log.warning("skip_corrupt: %d corrupt images were skipped in total", skipped)
        if self.gpu_fallbacks:
            log.warning("decode: gpu: %d files were refused by nvJPEG and decoded by PIL", self.gpu_fallbacks)

    def _loader(self, dataset: ClassFolder | Subset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("setup() has not been called for this stage")
        workers = self.workers()
        # Each worker runs torch with one thread (DataLoader sets it) and PIL decodes on one core.
        kwargs: dict[str, Any] = dict(
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=collate_bytes if train and self.decode == "gpu" else collate_skipping,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
        )
        if train:  # resumable mid-epoch (src/data/resume.py); Lightning shards the others itself
            trainer = self.trainer
            rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
            return ResumableDataLoader(dataset, drop_last=True, seed=run_seed(), rank=rank, world_size=world, **kwargs)
        return DataLoader(dataset, shuffle=False, drop_last=False, **kwargs)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is not None:
            world = self.trainer.world_size if self.trainer else 1
            check_one_batch(len(self.train_set), self.batch_size, world, str(self.root / "train"))
        return self.resumable(self._loader(self.train_set, train=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
