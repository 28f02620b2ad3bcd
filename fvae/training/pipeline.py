"""Training from Python, on a named dataset or on your own images:

    model, summary = fvae.train("fvae", preset="mnist", data=images_uint8, max_steps=500, out="runs/mine")

The same run folder as ``fvae train`` (which is a thin layer over this), the same config
checks, the trained model back (its EMA weights where kept).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from fvae.config import ConfigError, RunConfig, TrainConfig, apply_values
from fvae.data import DataError
from fvae.models import LatentFlowModel
from fvae.models.layout import fit_to_shape
from fvae.presets import run_config
from fvae.training.trainer import Trainer


def images_dataset(images: Any) -> Dataset:
    """A tensor or numpy array of ``uint8`` images, ``(N, H, W)`` or ``(N, C, H, W)``, as a
    dataset of ``(image, -1)``. Integer arrays of values in 0..255 are taken as they are; other
    values are refused with the scaling that fits their range."""
    array = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if array.dim() == 3:
        array = array[:, None]
    if array.dim() != 4 or array.shape[1] not in (1, 3) or min(array.shape) == 0:
        raise DataError(f"training images must be an array (N, H, W) or (N, C, H, W) with 1 or 3 channels, "
                        f"got shape {tuple(array.shape)}")
    if array.dtype != torch.uint8:
        low, high = float(array.min()), float(array.max())
        if not array.is_floating_point() and array.dtype != torch.bool and low >= 0 and high <= 255:
            array = array.to(torch.uint8)
        else:
            raise DataError(f"training images must be uint8 (0-255), got {array.dtype} with values in "
                            f"{low:g}..{high:g}; {_scaling_hint(low, high)}")
    return TensorDataset(array.contiguous(), torch.full((len(array),), -1, dtype=torch.long))


def _scaling_hint(low: float, high: float) -> str:
    """How to bring values in ``low..high`` to uint8."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "the array holds NaN or infinite values"
    if low >= 0 and high <= 1:
        return "scale them with (x * 255).round().astype(np.uint8)"
    if low >= 0:
        return f"scale them with (x * 255 / {high:g}).round().astype(np.uint8)"
    return f"scale them with ((x - ({low:g})) * 255 / {high - low:g}).round().astype(np.uint8)"


def context_array(context: Any, count: int) -> torch.Tensor:
    """One context vector an image: a float array ``(count, K)`` or ``(count,)``, as ``(count, K)``."""
    array = context if isinstance(context, torch.Tensor) else torch.as_tensor(np.asarray(context))
    array = array.float()[:, None] if array.dim() == 1 else array.float()
    if array.dim() != 2 or len(array) != count or array.shape[1] == 0:
        raise DataError(f"context must be (N, K) or (N,) with N = {count} images, got {tuple(array.shape)}")
    if not torch.isfinite(array).all():
        raise DataError("context holds NaN or infinite values")
    return array


def image_shape_of(dataset: Dataset) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of a dataset's first image."""
    image = dataset[0][0]
    return tuple(torch.as_tensor(image).shape)


def _split(dataset: Dataset) -> tuple[Dataset, Dataset]:
    """Every tenth item a test item, the rest training (all of it, for fewer than ten)."""
    test = list(range(9, len(dataset), 10))
    if not test:
        return dataset, dataset
    train = sorted(set(range(len(dataset))) - set(test))
    return torch.utils.data.Subset(dataset, train), torch.utils.data.Subset(dataset, test)


def train(kind: str = "fvae", preset: str = "mnist", data: Any = None, out: str | Path | None = None,
          config: RunConfig | None = None, resume: bool = False, progress: bool = True, context: Any = None,
          **fields) -> tuple[LatentFlowModel, dict]:
    """Train a ``kind`` model of ``preset`` and return ``(model, summary)``.

    ``data``: None (the preset's dataset), a dataset name or folder path (as ``--data``), a
    ``torch.utils.data.Dataset`` of ``(uint8 image, label)``, or a tensor or array of ``uint8``
    images ``(N, H, W)`` / ``(N, C, H, W)`` (every tenth image held out for testing). Images of
    another shape than the preset's get its model laid out for them (:mod:`fvae.models.layout`;
    one line on stderr says what changed).
    ``context``: with an array ``data``, a float array ``(N, K)`` (or ``(N,)``), one context vector
    an image: the model is conditioned on it (``model.num_context = K``; ``model.sample(n,
    context)``).
    ``config``: a full :class:`RunConfig` instead of the preset's. ``fields``: any config field by
    name, ``**{"model.flow_widths": 64, "train.lr": 1e-4}`` or ``model={"flow_widths": 64}``; a bare
    name is a training field (``max_steps=500``, ``lr=3e-4``, ``ema_decay=0.999`` ...). ``out``: the
    run folder (default: a new temporary folder).
    """
    config = config if config is not None else run_config(kind, preset)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {}
    for name, value in fields.items():
        if "." in name or name in ("model", "train", "data"):
            values[name] = value
        elif name in known:
            values[f"train.{name}"] = value
        else:
            raise ConfigError(f"unknown train config field {name!r}; known: {sorted(known)} (other fields by "
                              f"section: model.NAME=..., data.NAME=..., or model={{...}})")
    train_set = test_set = None
    if isinstance(data, (str, Path)):
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, name=str(data)))
    elif isinstance(data, Dataset):
        train_set, test_set = _split(data)
    elif data is not None:
        images = images_dataset(data)
        if context is not None:
            contexts = context_array(context, len(images))
            images = TensorDataset(images.tensors[0], contexts)
            values = {"model.num_context": contexts.shape[1], **values}
        train_set, test_set = _split(images)
    if context is not None and not isinstance(data, (np.ndarray, torch.Tensor)):
        raise DataError("context= goes with an array of images as data (one context vector an image)")
    shape = image_shape_of(train_set) if train_set is not None else None
    if shape is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, name="custom"))
        model, changed = fit_to_shape(config.model, shape)
        if changed:
            print(f"fvae: images of shape {shape}, not the {config.preset} preset's "
                  f"{config.model.image_shape}: {changed}", file=sys.stderr)
            config = dataclasses.replace(config, model=model)
    config = apply_values(config, values)
    if shape is not None and tuple(config.model.image_shape) != shape:
        raise DataError(f"training images of shape {shape} do not fit model.image_shape={config.model.image_shape}")
    if out is None:
        out = Path(tempfile.mkdtemp(prefix=f"fvae-{config.model.kind}-{time.strftime('%Y%m%d-%H%M%S')}-"))
    trainer = Trainer(config, out, resume=resume, progress=progress, train_set=train_set, test_set=test_set)
    summary = trainer.fit()
    return trainer.eval_model(), summary
