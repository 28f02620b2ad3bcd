"""Squeeze (space to channels) and the multi-scale split with a learned conditional prior."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fvae.flows.base import soft_clamp, sum_except_batch
from fvae.flows.nets import CouplingNet, zero_init
from fvae.fp32 import to_fp32


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 patch becomes 4 channels."""
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"squeeze needs even height and width, got {x.shape[2]}x{x.shape[3]}")
    return F.pixel_unshuffle(x, 2)


def unsqueeze(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`: ``(B, 4C, H, W) -> (B, C, 2H, 2W)``."""
    return F.pixel_shuffle(y, 2)


class Squeeze(nn.Module):
    """:func:`squeeze` as a flow block (``logdet = 0``)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return unsqueeze(y)


class GaussianSplit(nn.Module):
    """The factored-out half of a multi-scale level, whitened by a learned conditional prior.

    The prior of the split-off channels ``z2`` is ``N(mu(h), exp(log_sigma(h))^2)`` given
    the kept channels ``h`` (Glow). Written as a flow,
    ``eps = (z2 - mu(h)) * exp(-log_sigma(h))`` with ``logdet = -sum log_sigma(h)``, so
    that ``eps`` is ``N(0, I)`` under the prior. ``mu`` and ``log_sigma`` come from a
    zero-initialised 3x3 convolution of ``h`` (Glow's), or with ``width`` from a
    :class:`~fvae.flows.nets.CouplingNet` of that width: the prior starts as ``N(0, I)``.
    """

    def __init__(self, kept_channels: int, split_channels: int, scale_bound: float = 5.0,
                 width: int | None = None):
        super().__init__()
        self.conv = (CouplingNet(kept_channels, 2 * split_channels, width) if width
                     else zero_init(nn.Conv2d(kept_channels, 2 * split_channels, 3, padding=1)))
        self.scale_bound = scale_bound

    def _prior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = to_fp32(self.conv(h)).chunk(2, dim=1)
        return mu, soft_clamp(log_sigma, self.scale_bound)

    def forward(self, h: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, z2) -> (eps, logdet)``."""
        mu, log_sigma = self._prior(h)
        return (z2 - mu) * torch.exp(-log_sigma), -sum_except_batch(log_sigma)

    def inverse(self, h: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mu, log_sigma = self._prior(h)
        return eps * torch.exp(log_sigma) + mu
