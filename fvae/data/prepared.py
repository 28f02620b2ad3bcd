"""Datasets prepared once: cropped, resized and stored as memory-mapped ``uint8`` arrays.

    fvae prepare /data/celeba-hq --preset celebahq128 --out /data/celebahq128
    fvae train --preset celebahq128 --data /data/celebahq128

An image folder decodes and resizes every (often 1024x1024) file at every step; a prepared
folder reads ready pixels straight from the page cache, so the data path keeps up with a GPU
(``benchmarks/data_speed.py`` measures both). Layout:

    DIR/prepared.json                       source, image shape, counts
    DIR/{train,test}_images.npy             (N, C, H, W) uint8, opened with mmap_mode="r"
    DIR/{train,test}_labels.npy             (N,) int64, -1 where the source has no labels
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fvae.data.datasets import DataError
from fvae.errors import PathExists

MARKER = "prepared.json"


def is_prepared(path: str | Path) -> bool:
    return (Path(path).expanduser() / MARKER).exists()


class PreparedImages(Dataset):
    """One split of a prepared folder: ``(uint8 image (C, H, W), label)``, read from a memory map
    (opened lazily, so that each data-loader worker maps the file itself). A damaged or truncated
    file is a :class:`DataError` naming it, raised here rather than in the middle of training."""

    def __init__(self, root: str | Path, split: str, image_shape: tuple[int, int, int]):
        self.root, self.split = Path(root).expanduser(), split
        try:
            info = json.loads((self.root / MARKER).read_text())
            prepared_shape, self.count = tuple(info["image_shape"]), int(info["counts"][split])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"{self.root / MARKER} is damaged ({type(error).__name__}: {error}); "
                            f"prepare the folder again") from error
        if prepared_shape != tuple(image_shape):
            raise DataError(f"{self.root} was prepared for images of shape {prepared_shape}, the model "
                            f"takes {tuple(image_shape)}; prepare it again with the model's preset")
        self.image_shape = tuple(image_shape)
        self.labels = torch.from_numpy(self._load(f"{split}_labels.npy", (self.count,)))
        self.images: np.ndarray | None = None
        self._array()  # checked now, not mid-training
        self.images = None  # each loader worker maps the file itself

    def _load(self, name: str, shape: tuple[int, ...], mmap_mode: str | None = None) -> np.ndarray:
        path = self.root / name
        try:
            array = np.load(path, mmap_mode=mmap_mode)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path} is damaged or truncated ({' '.join(str(error).split())}); "
                            f"prepare the folder again") from error
        if array.shape != shape:
            raise DataError(f"{path} holds an array of shape {array.shape}, expected {shape}; prepare the folder again")
        return array

    def __len__(self) -> int:
        return self.count

    def _array(self) -> np.ndarray:
        if self.images is None:
            self.images = self._load(f"{self.split}_images.npy", (self.count, *self.image_shape), mmap_mode="r")
        return self.images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self._array()[index])), int(self.labels[index])

    def read_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` and labels ``(B,)`` of ``indices``, in one gather from the map."""
        return torch.from_numpy(self._array()[np.asarray(indices)]), self.labels[indices]


def _collate(items):
    images, labels = zip(*items)
    return torch.stack(images), torch.tensor(labels)


def prepare(splits: dict[str, Dataset], source: str, image_shape: tuple[int, int, int], out: str | Path,
            workers: int = 0, progress: bool = True) -> dict:
    """Decode, crop and resize every image of ``splits`` (``{"train": ..., "test": ...}``, datasets
    of ``uint8`` images of ``image_shape``, read from ``source``) once into ``out``; ``workers``
    processes decode in parallel. Written to a temporary folder and renamed."""
    out = Path(out).expanduser()
    if out.exists():
        raise PathExists(f"{out} already exists; choose another --out or remove it")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {}
    try:
        for split, dataset in splits.items():
            counts[split] = len(dataset)
            images = np.lib.format.open_memmap(tmp / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                               shape=(len(dataset), *image_shape))
            labels = np.empty(len(dataset), dtype=np.int64)
            loader = DataLoader(dataset, batch_size=64, num_workers=workers, collate_fn=_collate)
            start = 0
            for batch, batch_labels in tqdm(loader, desc=f"prepare {split}", disable=not progress):
                images[start:start + len(batch)] = batch.numpy()
                labels[start:start + len(batch)] = batch_labels.numpy()
                start += len(batch)
            images.flush()
            del images
            np.save(tmp / f"{split}_labels.npy", labels)
        info = {"source": source, "image_shape": list(image_shape), "counts": counts}
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info
