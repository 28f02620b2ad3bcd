"""Images to score, from files: a folder of image files, one image file, or a saved array."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from fvae.data.datasets import DataError, read_image, to_chw
from fvae.data.folder_split import IMAGE_SUFFIXES, image_files

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
    channels), one image file, or a ``.npy``/``.npz``/``.pt`` array. Returns floats ``(N, C, H, W)``
    in ``[0, 1]`` (non-finite values kept, for the caller to count)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {path}")
        arrays = [to_chw(read_image(file, channels)) for file in files]
        sizes = {tuple(a.shape) for a in arrays}
        if len(sizes) > 1:
            raise DataError(f"the images under {path} differ in size: {sorted(sizes)[:4]}")
        return torch.stack(arrays).float() / 255
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return to_chw(read_image(path, channels))[None].float() / 255
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


def load_labels(path: str | Path, count: int) -> torch.Tensor:
    """The class each of ``count`` scored images was drawn for: a ``.npy`` or ``.pt`` array ``(count,)``
    of integers, or a text file of one integer a line."""
    path = Path(path).expanduser()
    try:
        if path.suffix == ".pt":
            array = torch.load(path, weights_only=True)
        elif path.suffix == ".npy":
            array = np.load(path)
        else:
            array = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read labels from {path}: {error}") from error
    labels = torch.as_tensor(np.asarray(array))
    if labels.shape != (count,) or labels.is_floating_point():
        raise DataError(f"{path}: expected {count} integer labels, one per image, got {tuple(labels.shape)} "
                        f"{labels.dtype}")
    return labels.long()
