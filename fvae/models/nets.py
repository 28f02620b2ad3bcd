"""Plain convolutional networks: the f-VAE's encoder ``E`` and decoder ``G``, the VAE's heads.
(The coupling nets are in :mod:`fvae.flows.nets`.)

These know nothing of flows or losses; they map tensors to tensors.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from fvae.errors import InputError
from fvae.flows.base import class_channel_bias
from fvae.flows.nets import CouplingNet, memory_format_for, zero_init
from fvae.fp32 import full_precision, to_fp32
from fvae.models.norm_relu import GroupNormReLU


def set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """Run every coupling net, encoder and decoder of ``model`` in ``memory_format``,
    overriding :func:`memory_format_for`; values do not change, only speed."""
    for module in model.modules():
        if isinstance(module, CouplingNet):
            module.set_memory_format(memory_format)
        elif isinstance(module, (Encoder, Decoder)):
            module.formats = [memory_format] * len(module.formats)
            module.stages.to(memory_format=memory_format)
    return model


class ResidualBlock(nn.Module):
    """``x + conv1x1_zero(relu(norm(conv3x3(x)) + b_y))``: the identity at initialisation.

    The norm is a per-example GroupNorm, so the output never depends on the rest of the
    batch (the paper's code uses BatchNorm), with the ReLU after it fused into one autograd node
    (:class:`fvae.models.norm_relu.GroupNormReLU`). With ``num_classes`` the block takes class
    labels (``(B,)`` indices or ``(B, num_classes)`` weights) and adds a learned bias ``b_y`` per
    class (zero at the start) to its hidden layer; without, ``b_y = 0``. ``body``'s layers keep
    the names ``0``, ``1``, ``3`` that checkpoints of the unfused ``conv, norm, ReLU, conv`` have.
    """

    def __init__(self, channels: int, hidden: int, num_classes: int = 0):
        super().__init__()
        self.body = nn.Sequential(OrderedDict([
            ("0", nn.Conv2d(channels, hidden, 3, padding=1)),
            ("1", GroupNormReLU(_groups(hidden), hidden)),
            ("3", zero_init(nn.Conv2d(hidden, channels, 1))),
        ]))
        self.class_bias = nn.Parameter(torch.zeros(num_classes, hidden)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.class_bias is None:
            return x + to_fp32(self.body(x))
        conv, norm_relu, out = self.body
        return x + to_fp32(out(norm_relu(conv(x), class_channel_bias(labels, self.class_bias))))


def _groups(channels: int, most: int = 8) -> int:
    return max(g for g in range(1, most + 1) if channels % g == 0)


def _residual_stages(widths: list[int], blocks: int, hidden: int | None,
                     num_classes: int = 0) -> tuple[nn.ModuleList, list]:
    """One stage of ``blocks`` residual blocks per width, each block ``hidden`` wide (``None``: as
    wide as its input), with its weights in the memory format :func:`memory_format_for` picks for it."""
    stages, formats = nn.ModuleList(), [memory_format_for(c) for c in widths]
    for c, memory_format in zip(widths, formats):
        stage = nn.Sequential(*[ResidualBlock(c, c if hidden is None else hidden, num_classes)
                                for _ in range(blocks)])
        stages.append(stage.to(memory_format=memory_format))
    return stages, formats


def _run_stage(stage: nn.Sequential, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """A stage's residual blocks in turn, each given the labels."""
    for block in stage:
        x = block(x, labels)
    return x


class Encoder(nn.Module):
    """``E``: ``levels`` times (squeeze, then ``blocks`` residual blocks).

    ``(B, C, H, W) -> (B, C * 4^L, H / 2^L, W / 2^L)``: as many dimensions out as in.
    ``hidden=None`` makes each block as wide as its squeezed input (the paper's code).
    Each stage runs in the memory format :func:`memory_format_for` picks for its channels.
    """

    def __init__(self, channels: int, levels: int, blocks: int, hidden: int | None = None):
        super().__init__()
        widths = [channels * 4 ** (l + 1) for l in range(levels)]
        self.stages, self.formats = _residual_stages(widths, blocks, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_fp32(x)  # the residual stream stays fp32 under autocast; only the blocks' bodies may not
        for stage, memory_format in zip(self.stages, self.formats):
            x = stage(F.pixel_unshuffle(x, 2).contiguous(memory_format=memory_format))
        return x


class Decoder(nn.Module):
    """``G``: the mirror of :class:`Encoder`, ``levels`` times (blocks, then unsqueeze).

    ``(B, C * 4^L, H / 2^L, W / 2^L) -> (B, C, H, W)``. With ``num_classes`` every block takes
    the class labels too (:class:`ResidualBlock`), which ``forward`` then requires.
    """

    def __init__(self, channels: int, levels: int, blocks: int, hidden: int | None = None, num_classes: int = 0):
        super().__init__()
        widths = [channels * 4 ** l for l in range(levels, 0, -1)]
        self.num_classes = num_classes
        self.stages, self.formats = _residual_stages(widths, blocks, hidden, num_classes)

    def forward(self, v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and labels is None:
            raise InputError("this decoder is class-conditional (model.class_decoder): pass the labels")
        v = to_fp32(v)  # the residual stream stays fp32 under autocast; only the blocks' bodies may not
        for stage, memory_format in zip(self.stages, self.formats):
            v = F.pixel_shuffle(_run_stage(stage, v.contiguous(memory_format=memory_format), labels), 2)
        return v


class AffineContext(nn.Module):
    """``x -> cat(mu, log_sigma)`` for a conditional affine step: ``mu = E(x)`` and
    ``log_sigma`` from a zero-initialised 1x1 convolution of it (so ``sigma`` starts at 1)."""

    def __init__(self, encoder: nn.Module, channels: int):
        super().__init__()
        self.encoder = encoder
        self.log_sigma = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.encoder(x)
        return torch.cat([mu, self.log_sigma(mu)], dim=1)


class FlatHead(nn.Module):
    """``(B, C, H, W) -> (B, out)``: a linear map of the flattened features (the VAE's posterior
    mean and log-scale), in fp32 under mixed precision."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    @full_precision
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h.flatten(1))


class Unflatten(nn.Module):
    """``(B, d) -> (B, *shape)`` through a linear map: the VAE decoder's first layer, in fp32
    under mixed precision (it sets the decoder's output to the last digit)."""

    def __init__(self, in_features: int, shape: tuple[int, int, int]):
        super().__init__()
        self.shape = shape
        self.linear = nn.Linear(in_features, shape[0] * shape[1] * shape[2])

    @full_precision
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).view(z.shape[0], *self.shape)
