"""MNIST-style datasets from their original idx files, gzipped or not, wherever they lie.

The idx format (LeCun et al.): two zero bytes, a type code (``0x08``: unsigned bytes), the
number of dimensions ``n``, then ``n`` big-endian 32-bit sizes, then the values. A dataset is
four files, ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, each possibly with ``.gz``.

``mnist`` and ``fashion-mnist`` are looked for in the data root itself (or, with no root, the
cache ``~/.cache/fvae``), in torchvision's layout under it (``MNIST/raw``, ``FashionMNIST/raw``),
in a folder named after the dataset under it, and in Debian's ``/usr/share/datasets/<name>``
(``apt-get install dataset-fashion-mnist``).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from fvae.data.datasets import DataError

PREFIXES = {"train": "train", "test": "t10k"}
KINDS = {"images": "images-idx3-ubyte", "labels": "labels-idx1-ubyte"}
UBYTE = 0x08
# torchvision's folder and Debian's package of each dataset read from idx files
IDX_DATASETS = {"mnist": ("MNIST", None), "fashion-mnist": ("FashionMNIST", "dataset-fashion-mnist")}
DEBIAN_ROOT = Path("/usr/share/datasets")


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one idx file (``.gz`` read through gzip), ``uint8`` of the stored shape.

    A damaged file (a wrong magic number, fewer bytes than its header promises, a broken gzip
    stream) is a :class:`DataError` naming the file.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"cannot read idx file {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or not 1 <= raw[3] <= 4:
        raise DataError(f"{path} is not an idx file of unsigned bytes (its header is {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path} is truncated or damaged: {len(raw)} bytes where its header "
                        f"{shape} promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def idx_file(folder: Path, split: str, kind: str) -> Path | None:
    """``folder``'s idx file of ``split`` and ``kind`` (``images``/``labels``), raw or gzipped."""
    stem = f"{PREFIXES[split]}-{KINDS[kind]}"
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def is_idx_folder(folder: str | Path) -> bool:
    """Does ``folder`` hold the four idx files of a dataset?"""
    folder = Path(folder)
    return all(idx_file(folder, split, kind) for split in PREFIXES for kind in KINDS)


def expected_names() -> list[str]:
    return [f"{PREFIXES[s]}-{KINDS[k]}[.gz]" for s in PREFIXES for k in KINDS]


def candidate_folders(name: str, root: str | Path | None, cache: Path) -> list[Path]:
    """Where ``mnist`` or ``fashion-mnist`` may lie, in the order they are looked in."""
    torchvision_name, _ = IDX_DATASETS[name]
    base = Path(root).expanduser() if root is not None else cache
    folders = [base, base / torchvision_name / "raw", base / name]
    if root is None:
        folders.append(DEBIAN_ROOT / name)
    return folders


def find_idx_folder(name: str, root: str | Path | None, cache: Path) -> Path | None:
    """The first of :func:`candidate_folders` that holds all four files, or None."""
    return next((f for f in candidate_folders(name, root, cache) if is_idx_folder(f)), None)


def missing_message(name: str, root: str | Path | None, cache: Path) -> str:
    """What to do when ``name`` is found nowhere: the package, the folders, the file names."""
    _, package = IDX_DATASETS[name]
    install = f"apt-get install {package} (it installs {DEBIAN_ROOT / name}), or " if package else ""
    looked = ", ".join(str(f) for f in candidate_folders(name, root, cache))
    return (f"dataset {name!r} was not found and could not be downloaded: {install}put its four idx files "
            f"({', '.join(expected_names())}) in one of: {looked}; or pass --data-root DIR")


def idx_dataset(folder: str | Path, split: str, image_shape: tuple[int, int, int] | None = None) -> TensorDataset:
    """``split`` (``train`` or ``test``) of the idx files in ``folder``: ``uint8`` images
    ``(N, 1, H, W)`` and ``int64`` labels, checked against each other and ``image_shape``."""
    folder = Path(folder)
    images_path, labels_path = idx_file(folder, split, "images"), idx_file(folder, split, "labels")
    if images_path is None or labels_path is None:
        raise DataError(f"{folder} has no {split} idx files: expected {', '.join(expected_names())}")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{images_path} ({images.shape}) and {labels_path} ({labels.shape}) are not "
                        f"N images of H x W and their N labels")
    images = torch.from_numpy(images.copy())[:, None]
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise DataError(f"the images in {folder} have shape {tuple(images.shape[1:])} but the model takes "
                        f"{tuple(image_shape)}; choose a preset of that size or set model.image_shape")
    return TensorDataset(images, torch.from_numpy(labels.astype(np.int64)))
