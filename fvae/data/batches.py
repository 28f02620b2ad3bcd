"""The training data, step by step: which images each step and rank sees, and its noise.

A step's batch (from a per-epoch permutation, each rank a strided share), its dequantization
noise and its posterior noise are functions of ``(seed, step, rank)``, so a run resumed from a
checkpoint repeats exactly the steps of an uninterrupted one. An image that cannot be read
(a file damaged or removed during a long run) is replaced by the next readable one and
counted, rather than ending the run.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate

from fvae.data.datasets import DataError

MAX_REPLACEMENTS = 16


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of everything random in one step of one rank."""
    return (seed * 1_000_003 + step) * 4099 + rank


def _collate(batch):
    """A batch read whole (a tuple of tensors) as it is; a list of items stacked."""
    return batch if isinstance(batch, tuple) else default_collate(batch)


def batch_reader(dataset: Dataset) -> Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]] | None:
    """``indices -> (images, labels)`` read in one go, for datasets that allow it (prepared folders'
    ``read_batch``, tensors in memory, subsets of either); None for those read item by item."""
    if hasattr(dataset, "read_batch"):
        return dataset.read_batch
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        images, labels = dataset.tensors
        return lambda indices: (images[indices], labels[indices])
    if isinstance(dataset, Subset) and (inner := batch_reader(dataset.dataset)) is not None:
        return lambda indices: inner([dataset.indices[i] for i in indices])
    return None


def read_items(dataset: Dataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The items ``indices`` of ``dataset`` that can be read, as stacked ``(images, labels)``, and what
    was wrong with each one that could not (a :class:`DataError`'s message), which is left out."""
    reader = batch_reader(dataset)
    if reader is not None:
        images, labels = reader(indices)
        return images, torch.as_tensor(labels), []
    items, problems = [], []
    for index in indices:
        try:
            items.append(dataset[index])
        except DataError as error:
            problems.append(str(error))
    if not items:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), problems
    return torch.stack([image for image, _ in items]), torch.tensor([int(label) for _, label in items]), problems


def readable_batches(dataset: Dataset, indices: list[int], batch_size: int, what: str = "test"):
    """``(images, labels)`` of ``indices`` in batches of up to ``batch_size``, the images that cannot be
    read left out: counted and the first named on one line of stderr at the end, an error if none
    can be read."""
    problems, read = [], 0
    for start in range(0, len(indices), batch_size):
        images, labels, bad = read_items(dataset, indices[start:start + batch_size])
        problems += bad
        read += len(images)
        if len(images):
            yield images, labels
    if problems:
        if not read:
            raise DataError(f"none of the {len(indices)} {what} images could be read; the first: {problems[0]}")
        print(f"note: skipped {len(problems)} unreadable {what} image(s); the first: {problems[0]}", file=sys.stderr)


class SkipUnreadable(Dataset):
    """``dataset[i]`` as ``(image, label, unreadable)``: where item ``i`` cannot be read, the
    next readable item in its place and ``unreadable`` the number passed over."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.read_batch = batch_reader(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]):
        """A whole batch in one read where the dataset can (:func:`batch_reader`), else item by item."""
        if self.read_batch is not None:
            images, labels = self.read_batch(indices)
            return images, labels, torch.zeros(len(indices), dtype=torch.long)
        return [self[i] for i in indices]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        problems = []
        for offset in range(MAX_REPLACEMENTS):
            try:
                image, label = self.dataset[(index + offset) % len(self.dataset)]
                return image, label, offset
            except DataError as error:
                problems.append(str(error))
        raise DataError(f"{MAX_REPLACEMENTS} images in a row cannot be read, the last: {problems[-1]}")


class EpochBatches:
    """The batches of a step onward: each epoch a permutation seeded by ``(seed, epoch)``,
    rank ``r`` taking every ``world_size``-th index; the last incomplete batch dropped.
    ``pin_memory``: loader workers hand over pinned memory (for a GPU)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, pin_memory: bool = False):
        self.dataset, self.batch_size, self.seed = SkipUnreadable(dataset), batch_size, seed
        self.rank, self.world_size, self.num_workers, self.pin_memory = rank, world_size, num_workers, pin_memory
        self.steps_per_epoch = len(dataset) // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise DataError(f"the training set has {len(dataset)} images, fewer than one batch of "
                            f"{batch_size} x {world_size} process(es); lower --batch-size or add images")

    def batch_indices(self, step: int):
        """The dataset indices of each batch of this rank from ``step`` on, forever."""
        epoch, skip = divmod(step, self.steps_per_epoch)
        while True:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + epoch))
            mine = order[self.rank::self.world_size].tolist()
            for i in range(skip, self.steps_per_epoch):
                yield mine[i * self.batch_size:(i + 1) * self.batch_size]
            epoch, skip = epoch + 1, 0

    def from_step(self, step: int):
        """Yield ``(step, images, labels, unreadable)`` forever, starting at ``step``. One loader serves
        the whole run, so its worker processes (``num_workers``) live as long as it does; on a
        GPU they hand over pinned memory."""
        options = {}
        if self.num_workers:
            options = dict(num_workers=self.num_workers, pin_memory=self.pin_memory, prefetch_factor=4)
        loader = DataLoader(self.dataset, batch_sampler=self.batch_indices(step), collate_fn=_collate, **options)
        for offset, (images, labels, unreadable) in enumerate(loader):
            yield step + offset, images, torch.as_tensor(labels), sum(unreadable.tolist())  # no tensor op per step
