"""Training from Python, on a named dataset or on your own images:

    model, summary = fvae.train("fvae", preset="mnist", data=images_uint8, max_steps=500, out="runs/mine")

The same run folder as ``fvae train`` (which is a thin layer over this), the same config
checks, the trained model back (its EMA weights where kept).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from fvae.config import ConfigError, RunConfig, TrainConfig
from fvae.data import DataError
from fvae.models import LatentFlowModel
from fvae.presets import run_config
from fvae.training.trainer import Trainer


def images_dataset(images: Any, image_shape: tuple[int, int, int]) -> Dataset:
    """A tensor or numpy array of ``uint8`` images, ``(N, H, W)`` or ``(N, C, H, W)``, as a
    dataset of ``(image, -1)``; its shape must be the model's."""
    array = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if array.dtype != torch.uint8:
        raise DataError(f"training images must be uint8 (0-255), got {array.dtype}; "
                        f"scale floats in [0, 1] with (x * 255).round().to(torch.uint8)")
    if array.dim() == 3:
        array = array[:, None]
    if array.dim() != 4 or tuple(array.shape[1:]) != tuple(image_shape):
        raise DataError(f"training images of shape {tuple(array.shape)} do not fit the model, which takes "
                        f"(N, {', '.join(map(str, image_shape))}); choose a preset or set model.image_shape")
    return TensorDataset(array.contiguous(), torch.full((len(array),), -1, dtype=torch.long))


def _split(dataset: Dataset) -> tuple[Dataset, Dataset]:
    """Every tenth item a test item, the rest training (all of it, for fewer than ten)."""
    test = list(range(9, len(dataset), 10))
    if not test:
        return dataset, dataset
    train = sorted(set(range(len(dataset))) - set(test))
    return torch.utils.data.Subset(dataset, train), torch.utils.data.Subset(dataset, test)


def train(kind: str = "fvae", preset: str = "mnist", data: Any = None, out: str | Path | None = None,
          config: RunConfig | None = None, resume: bool = False, progress: bool = True, **fields
          ) -> tuple[LatentFlowModel, dict]:
    """Train a ``kind`` model of ``preset`` and return ``(model, summary)``.

    ``data``: None (the preset's dataset), a dataset name or folder path (as ``--data``), a
    ``torch.utils.data.Dataset`` of ``(uint8 image, label)``, or a tensor or array of ``uint8``
    images ``(N, H, W)`` / ``(N, C, H, W)`` (every tenth image held out for testing).
    ``config``: a full :class:`RunConfig` instead of the preset's. ``fields``: fields of the
    training config (``max_steps=500``, ``lr=3e-4``, ``ema_decay=0.999`` ...). ``out``: the run
    folder (default: a new temporary folder).
    """
    config = config if config is not None else run_config(kind, preset)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(fields) - known
    if unknown:
        raise ConfigError(f"unknown train config fields: {sorted(unknown)}; known: {sorted(known)}")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **fields))
    train_set = test_set = None
    if isinstance(data, (str, Path)):
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, name=str(data)))
    elif isinstance(data, Dataset):
        train_set, test_set = _split(data)
    elif data is not None:
        train_set, test_set = _split(images_dataset(data, config.model.image_shape))
    if train_set is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, name="custom"))
    if out is None:
        out = Path(tempfile.mkdtemp(prefix=f"fvae-{config.model.kind}-{time.strftime('%Y%m%d-%H%M%S')}-"))
    trainer = Trainer(config, out, resume=resume, progress=progress, train_set=train_set, test_set=test_set)
    summary = trainer.fit()
    return trainer.eval_model(), summary
