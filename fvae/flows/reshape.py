"""Squeeze (space to channels) and the multi-scale split with a learned conditional prior."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fvae.errors import InputError
from fvae.flows.base import FlowBlock, class_channel_bias, soft_clamp, sum_except_batch, zero_logdet
from fvae.flows.nets import CouplingNet, zero_init
from fvae.fp32 import to_fp32


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 patch becomes 4 channels."""
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise InputError(f"squeeze needs even height and width, got {x.shape[2]}x{x.shape[3]}")
    return F.pixel_unshuffle(x, 2)


def unsqueeze(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`: ``(B, 4C, H, W) -> (B, C, 2H, 2W)``."""
    return F.pixel_shuffle(y, 2)


class Squeeze(FlowBlock):
    """:func:`squeeze` as a flow block (``logdet = 0``)."""

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze(x), zero_logdet(x)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        return unsqueeze(y)


class GaussianSplit(FlowBlock):
    """The factored-out half of a multi-scale level, whitened by a learned conditional prior.

    ``x = (h, z2)`` on channels, ``h`` the ``kept_channels`` the flow goes on with. The prior of
    the split-off ``z2`` is ``N(mu(h), exp(log_sigma(h))^2)`` (Glow). Written as a flow block,
    ``y = (h, eps)``, ``eps = (z2 - mu(h)) * exp(-log_sigma(h))``, ``logdet = -sum log_sigma(h)``,
    so that ``eps`` is ``N(0, I)`` under the prior. ``mu`` and ``log_sigma`` come from a
    zero-initialised 3x3 convolution of ``h`` (Glow's), or with ``width`` from a
    :class:`~fvae.flows.nets.CouplingNet` of that width: the prior starts as ``N(0, I)``.
    With ``num_classes`` the context is a batch of class labels (``(B,)`` indices, or ``(B, C)``
    class weights: :func:`~fvae.flows.base.class_weights`), and each class adds a learned shift to
    ``mu`` and ``log_sigma`` of every channel (zero at the start).
    """

    def __init__(self, kept_channels: int, split_channels: int, scale_bound: float = 5.0,
                 width: int | None = None, num_classes: int = 0):
        super().__init__()
        self.kept = kept_channels
        self.conv = (CouplingNet(kept_channels, 2 * split_channels, width) if width
                     else zero_init(nn.Conv2d(kept_channels, 2 * split_channels, 3, padding=1)))
        self.num_classes = num_classes
        self.class_shift = nn.Parameter(torch.zeros(num_classes, 2 * split_channels)) if num_classes else None
        self.scale_bound = scale_bound

    def _prior(self, h: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
        params = to_fp32(self.conv(h))
        if self.class_shift is not None:
            if labels is None:
                raise InputError("a class-conditional split prior needs the labels as its context")
            params = params + class_channel_bias(labels, self.class_shift).to(params.dtype)
        mu, log_sigma = params.chunk(2, dim=1)
        return mu, soft_clamp(log_sigma, self.scale_bound)

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        h, z2 = x[:, :self.kept], x[:, self.kept:]
        mu, log_sigma = self._prior(h, context)
        return torch.cat([h, (z2 - mu) * torch.exp(-log_sigma)], dim=1), -sum_except_batch(log_sigma)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        h, eps = y[:, :self.kept], y[:, self.kept:]
        mu, log_sigma = self._prior(h, context)
        return torch.cat([h, eps * torch.exp(log_sigma) + mu], dim=1)
