"""The class labels of a dataset, for class-conditional models: read without decoding images.

Every dataset yields ``(image, label)``, ``-1`` where an image has no class. A class-conditional
model (``model.num_classes > 0``) needs every training image labelled ``0 .. num_classes - 1``.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from fvae.data.datasets import DataError


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The labels of every item, ``(N,)`` int64: from the label tensor or list a dataset keeps
    (tensors, idx files, prepared folders, image folders, subsets of them), else item by item."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) > 1:
        return dataset.tensors[1].long()
    if hasattr(dataset, "labels"):
        return torch.as_tensor(dataset.labels, dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def class_counts(dataset: Dataset, num_classes: int, name: str) -> torch.Tensor:
    """How many training images each of ``num_classes`` classes has; a dataset without labels,
    or with labels outside ``0 .. num_classes - 1``, is a :class:`DataError` saying so."""
    labels = dataset_labels(dataset)
    if len(labels) and labels.min() < 0:
        raise DataError(f"model.num_classes={num_classes} needs labelled images, but {name} has none "
                        f"(an image folder gives classes from its subfolders, as torchvision's ImageFolder)")
    if len(labels) and labels.max() >= num_classes:
        raise DataError(f"{name} has labels up to {int(labels.max())}, more classes than model.num_classes="
                        f"{num_classes}; set model.num_classes={int(labels.max()) + 1}")
    return torch.bincount(labels, minlength=num_classes)


def training_contexts(dataset: Dataset, num_context: int) -> torch.Tensor:
    """The context vectors of every training item, ``(N, num_context)`` float: a dataset of
    ``(image, context)`` (``fvae.train(..., context=array)`` makes one); anything else is a
    :class:`DataError` saying what a context model needs."""
    base, index = dataset, None
    if isinstance(dataset, Subset):
        base, index = dataset.dataset, torch.as_tensor(dataset.indices, dtype=torch.long)
    contexts = base.tensors[1] if isinstance(base, TensorDataset) and len(base.tensors) > 1 else None
    if contexts is None or contexts.shape[1:] != (num_context,) or not contexts.is_floating_point():
        got = "no context" if contexts is None else f"labels of shape {tuple(contexts.shape)} {contexts.dtype}"
        raise DataError(f"model.num_context={num_context} needs a context vector of {num_context} floats per "
                        f"training image (fvae.train(..., context=array)), got {got}")
    return (contexts if index is None else contexts[index]).float()
