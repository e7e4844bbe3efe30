"""Data sets as uint8 tensors (CIFAR, digits, synthetic) or an ImageFolder (ImageNet).

Small data sets live in memory as uint8 (N, C, H, W) and, on a GPU, on the device: batches,
shuffling and augmentation (pad-4 random crop, horizontal flip) are then batched tensor ops
with no DataLoader and no per-image Python work.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ctrw.config import DataConfig

__all__ = [
    "DataNotFoundError",
    "as_float_images",
    "DataSplits",
    "StreamedImages",
    "TensorSplit",
    "augment_batch",
    "download_allowed",
    "iterate_batches",
    "load_data",
]

log = logging.getLogger(__name__)

_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The test split of digits is fixed whatever the training seed, so numbers stay comparable.
_DIGITS_SPLIT_SEED = 20231210


class DataNotFoundError(FileNotFoundError):
    """The data set is not on disk and may not (or cannot) be downloaded."""


def download_allowed() -> bool:
    """Whether the operator lets this process download missing data sets (``CTRW_ALLOW_DOWNLOAD``
    = 1/true/yes; off by default). Never a job field: a request must not make a worker fetch from
    the internet. torchvision checks every CIFAR file's md5 against its built-in list before it
    unpickles it, so a tampered file in the data directory is refused, not loaded."""
    return os.environ.get("CTRW_ALLOW_DOWNLOAD", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class TensorSplit:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True))

    def head(self, n: int | None) -> TensorSplit:
        return self if n is None or n >= len(self) else TensorSplit(self.x[:n], self.y[:n])

    def float_images(self) -> torch.Tensor:
        return self.x.float().div_(255)  # (N, C, H, W) in [0, 1]


Split = TensorSplit | Dataset


class StreamedImages:
    """The first images of a map-style data set (an ImageFolder), decoded only when a slice is
    moved to a device: the evaluation's ``x`` for data sets too large to hold (ImageNet).

    Behaves as the evaluation uses an image tensor: ``shape``, ``dtype`` (uint8), slicing with
    a step of 1 (another lazy view) and ``to(device)`` (decodes the view in ``workers``
    DataLoader processes, as uint8). Memory is then one batch whatever the number of images;
    the price is decoding again on every pass (each attack, protocol and repeat).
    """

    dtype = torch.uint8

    def __init__(
        self, dataset: Dataset, *, start: int = 0, stop: int | None = None, workers: int = 0
    ) -> None:
        self.dataset = dataset
        self.start = start
        self.stop = len(dataset) if stop is None else stop  # type: ignore[arg-type]
        self.workers = workers

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.stop - self.start, *self.dataset[0][0].shape)

    def __getitem__(self, s: slice) -> StreamedImages:
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise TypeError("StreamedImages takes contiguous slices only")
        start, stop, _ = s.indices(self.stop - self.start)
        return StreamedImages(
            self.dataset, start=self.start + start, stop=self.start + max(start, stop), workers=self.workers
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
        subset = torch.utils.data.Subset(self.dataset, range(self.start, self.stop))
        loader = DataLoader(subset, batch_size=256, num_workers=self.workers)
        # ToTensor's x / 255 of uint8 pixels is undone exactly by round(x * 255).
        x = torch.cat([xb.mul_(255).round_().to(torch.uint8) for xb, _ in loader])
        if torch.device(device).type == "cuda":
            x = x.pin_memory()  # so that a non_blocking copy is asynchronous
        return x.to(device, non_blocking=non_blocking)


def as_float_images(x: torch.Tensor | StreamedImages, device: torch.device) -> torch.Tensor:
    """Images in [0, 1] as float on ``device``. uint8 (0..255) is moved first and converted
    there: a quarter of the bytes to copy, and the float copy lives for one batch only (the
    evaluation streams its test images this way). Float images are only moved."""
    x = x.to(device, non_blocking=True)
    return x.float().div_(255) if x.dtype == torch.uint8 else x


@dataclass
class DataSplits:
    name: str
    train: Split
    val: Split | None
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    notes: list[str] = field(default_factory=list)


def load_data(cfg: DataConfig, *, seed: int = 0) -> DataSplits:
    """Load the configured data set with its train / validation / test splits.

    The validation split is carved out of the training set with ``seed``. With
    ``select_on_test`` (the published code's practice) the test set doubles as validation.

    Raises:
        DataNotFoundError: the files are missing; the message names the directory and what to
            put there.
    """
    loader = {
        "cifar10": _load_cifar,
        "cifar100": _load_cifar,
        "digits": _load_digits,
        "synthetic": _load_synthetic,
        "imagenet": _load_imagenet,
    }[cfg.dataset]
    splits = loader(cfg)
    if isinstance(splits.train, TensorSplit):
        splits.train = _subset(splits.train, cfg.train_subset, seed)
        splits.test = (
            splits.test.head(cfg.test_subset) if isinstance(splits.test, TensorSplit) else splits.test
        )
        if cfg.select_on_test:
            splits.val = splits.test
            splits.notes.append("model selection on the TEST set (select_on_test=true, published practice)")
        elif cfg.val_fraction > 0:
            splits.train, splits.val = _split_off(splits.train, cfg.val_fraction, seed)
    else:  # an ImageFolder: the subsets are index views (nothing is decoded here)
        if cfg.train_subset is not None and cfg.train_subset < len(splits.train):
            idx = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))
            splits.train = torch.utils.data.Subset(splits.train, idx[: cfg.train_subset].tolist())
        if cfg.test_subset is not None and cfg.test_subset < len(splits.test):
            # The first n, still an ImageFolder (the evaluation reads its ``targets``).
            test = copy.copy(splits.test)
            test.samples = test.imgs = test.samples[: cfg.test_subset]
            test.targets = test.targets[: cfg.test_subset]
            splits.test = test
        if cfg.select_on_test:
            splits.val = splits.test
    return splits


def _subset(split: TensorSplit, n: int | None, seed: int) -> TensorSplit:
    if n is None or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return TensorSplit(split.x[idx], split.y[idx])


def _split_off(split: TensorSplit, fraction: float, seed: int) -> tuple[TensorSplit, TensorSplit]:
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed + 1))
    n_val = max(1, int(round(len(split) * fraction)))
    val, train = perm[:n_val], perm[n_val:]
    return TensorSplit(split.x[train], split.y[train]), TensorSplit(split.x[val], split.y[val])


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xf = x.float() / 255
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


# --------------------------------------------------------------------------- CIFAR


def _load_cifar(cfg: DataConfig) -> DataSplits:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, folder, k, stats = (
        (CIFAR10, "cifar-10-batches-py", 10, _CIFAR10_STATS)
        if cfg.dataset == "cifar10"
        else (CIFAR100, "cifar-100-python", 100, _CIFAR100_STATS)
    )
    root = Path(cfg.root)
    download = download_allowed()
    if not (root / folder).is_dir() and not download:
        raise DataNotFoundError(
            f"{cfg.dataset}: no data in {root.resolve()}. Put the extracted '{folder}' folder there "
            "(from the official python-version archive), or let this worker download it "
            "(CTRW_ALLOW_DOWNLOAD=1, a machine with internet)."
        )
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DataNotFoundError(f"{cfg.dataset}: could not read {root.resolve() / folder}: {e}") from e

    def to_split(ds: CIFAR10) -> TensorSplit:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8
        return TensorSplit(x, torch.tensor(ds.targets, dtype=torch.long))

    return DataSplits(
        cfg.dataset, to_split(train), None, to_split(test), k, (3, 32, 32), *stats, augment=cfg.augment
    )


# --------------------------------------------------------------------------- digits (offline, real)


def _load_digits(cfg: DataConfig) -> DataSplits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    if cfg.image_size != 8:
        x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1).repeat(1, cfg.channels, 1, 1)
    x8 = (x * 255).round().to(torch.uint8)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_DIGITS_SPLIT_SEED))
    n_test = 360  # ~20%, fixed
    test, train = perm[:n_test], perm[n_test:]
    mean, std = _channel_stats(x8[train])
    return DataSplits(
        "digits",
        TensorSplit(x8[train], y[train]),
        None,
        TensorSplit(x8[test], y[test]),
        10,
        (cfg.channels, cfg.image_size, cfg.image_size),
        mean,
        std,
        augment=cfg.augment,
    )


# --------------------------------------------------------------------------- synthetic (tests)


def _load_synthetic(cfg: DataConfig) -> DataSplits:
    """Class prototypes plus noise: learnable, deterministic, any size."""
    g = torch.Generator().manual_seed(12345)
    c, s, k = cfg.channels, cfg.image_size, cfg.num_classes
    protos = 0.2 + 0.6 * torch.rand((k, c, s, s), generator=g)  # (K, C, S, S)

    def make(n: int) -> TensorSplit:
        y = torch.arange(n) % k
        x = (protos[y] + 0.15 * torch.randn((n, c, s, s), generator=g)).clamp(0, 1)
        return TensorSplit((x * 255).round().to(torch.uint8), y)

    train, test = make(cfg.synthetic_train), make(cfg.synthetic_test)
    mean, std = _channel_stats(train.x)
    return DataSplits("synthetic", train, None, test, k, (c, s, s), mean, std, augment=cfg.augment)


# --------------------------------------------------------------------------- ImageNet


def _load_imagenet(cfg: DataConfig) -> DataSplits:
    from torchvision import datasets, transforms

    root = Path(cfg.root)
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise DataNotFoundError(
            f"imagenet: expected ImageFolder directories {train_dir.resolve()} and {val_dir.resolve()} "
            "(one sub-folder per class with JPEG images). ImageNet cannot be downloaded automatically."
        )
    # Inputs stay in [0, 1]: normalization is inside the model.
    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    )
    test_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    train = datasets.ImageFolder(str(train_dir), transform=train_tf)
    test = datasets.ImageFolder(str(val_dir), transform=test_tf)
    return DataSplits(
        "imagenet",
        train,
        None,
        test,
        len(train.classes),
        (3, 224, 224),
        *_IMAGENET_STATS,
        augment=False,
        notes=["ImageNet: model selection uses the last epoch unless select_on_test"],
    )


# --------------------------------------------------------------------------- batching


def augment_batch(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Pad-``pad`` random crop and horizontal flip, batched.

    Args:
        x: (B, C, H, W) images.
        offsets: (B, 2) int64 crop offsets in [0, 2 * pad].
        flips: (B,) bool, flip this image.
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))  # zero padding, like transforms.RandomCrop(padding=4)
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    out = out.permute(0, 3, 1, 2)
    return torch.where(flips[:, None, None, None], out.flip(3), out)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    device: torch.device,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    augment: bool = False,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x float in [0, 1], y) batches on ``device``.

    For tensor splits all randomness (order, crops, flips) comes from ``generator`` (CPU),
    drawn once per epoch, so a resumed run sees exactly the same batches.
    """
    if not isinstance(split, TensorSplit):
        loader = DataLoader(
            split,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if augment:
        offsets = torch.randint(0, 9, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        offsets, flips = offsets.to(device, non_blocking=True), flips.to(device, non_blocking=True)
    order = order.to(split.x.device, non_blocking=True)
    end = n - n % batch_size if drop_last else n
    for start in range(0, end, batch_size):
        idx = order[start : start + batch_size]
        x = split.x[idx].to(device, non_blocking=True).float().div_(255)
        if augment:
            pos = torch.arange(start, start + len(idx), device=device)
            x = augment_batch(x, offsets[pos], flips[pos])
        yield x, split.y[idx].to(device, non_blocking=True)


def num_batches(split: Split, batch_size: int, drop_last: bool) -> int:
    n = len(split)  # type: ignore[arg-type]
    return n // batch_size if drop_last else -(-n // batch_size)
