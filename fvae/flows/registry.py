"""Every flow block by name: the one list the config's choices, :func:`~fvae.flows.glow.glow_step`
and the tests read. A new block is one class and one line here.

Each entry says the block's role in a step of flow (``normalization``, ``mixing``, ``coupling``,
``reshape``, ``conditional``) and how to build it for ``channels`` channels::

    build(channels, width, seed, kernel_size, num_classes) -> FlowBlock

``width`` is that of the block's network (where it has one), ``seed`` fixes a random
permutation, ``kernel_size`` is that of a coupling net's outer convolutions, ``num_classes``
(0: none) makes a coupling's net take class labels as its context. Conditional blocks
built here take a context of the input's own shape (the f-VAE builds its own, conditioned
on the image through ``E``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fvae.errors import InputError
from fvae.flows.actnorm import ActNorm
from fvae.flows.base import FlowBlock
from fvae.flows.conditional import ConditionalAffine, ConditionalShift
from fvae.flows.conv1x1 import InvertibleConv1x1, InvertibleConv1x1LU, Permutation
from fvae.flows.coupling import AdditiveCoupling, AffineCoupling
from fvae.flows.nets import CouplingNet
from fvae.flows.reshape import GaussianSplit, Squeeze


@dataclass(frozen=True)
class BlockSpec:
    """A block's role and its builder ``(channels, width, seed, kernel_size, num_classes) -> FlowBlock``."""

    role: str
    build: Callable[[int, int, int, int, int], FlowBlock]


BLOCKS: dict[str, BlockSpec] = {
    "actnorm": BlockSpec("normalization", lambda c, width, seed, k, classes: ActNorm(c)),
    "conv1x1": BlockSpec("mixing", lambda c, width, seed, k, classes: InvertibleConv1x1(c)),
    "conv1x1_lu": BlockSpec("mixing", lambda c, width, seed, k, classes: InvertibleConv1x1LU(c)),
    "shuffle": BlockSpec("mixing", lambda c, width, seed, k, classes: Permutation(c, "shuffle", seed)),
    "reverse": BlockSpec("mixing", lambda c, width, seed, k, classes: Permutation(c, "reverse")),
    "affine": BlockSpec("coupling", lambda c, width, seed, k, classes: AffineCoupling(c, width, kernel_size=k, num_classes=classes)),
    "additive": BlockSpec("coupling", lambda c, width, seed, k, classes: AdditiveCoupling(c, width, k, classes)),
    "squeeze": BlockSpec("reshape", lambda c, width, seed, k, classes: Squeeze()),
    "split_prior": BlockSpec("reshape", lambda c, width, seed, k, classes: GaussianSplit(c // 2, c - c // 2, width=width)),
    "conditional_affine": BlockSpec("conditional", lambda c, width, seed, k, classes: ConditionalAffine(
        CouplingNet(c, 2 * c, width, k))),
    "conditional_shift": BlockSpec("conditional", lambda c, width, seed, k, classes: ConditionalShift(
        CouplingNet(c, c, width, k), sigma_init=0.5)),
}


def block_names(role: str) -> tuple[str, ...]:
    """The names of the blocks of one role, in registry order (``block_names("coupling")``)."""
    return tuple(name for name, spec in BLOCKS.items() if spec.role == role)


def build_block(name: str, channels: int, width: int = 64, seed: int = 0, kernel_size: int = 3,
                num_classes: int = 0) -> FlowBlock:
    """The block registered as ``name``; an unknown name is a clear error."""
    if name not in BLOCKS:
        raise InputError(f"unknown flow block {name!r}: expected one of {tuple(BLOCKS)}")
    return BLOCKS[name].build(channels, width, seed, kernel_size, num_classes)
