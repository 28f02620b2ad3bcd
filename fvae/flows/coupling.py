"""Affine and additive coupling layers (Dinh et al., 2017; Kingma & Dhariwal, 2018)."""
from __future__ import annotations

import torch

from fvae.flows.base import FlowBlock, soft_clamp, sum_except_batch, zero_logdet
from fvae.flows.nets import CouplingNet
from fvae.fp32 import to_fp32


class AffineCoupling(FlowBlock):
    """Split ``x = (x1, x2)`` on channels; ``y1 = x1``, ``y2 = s(x1) * x2 + t(x1)``.

    ``log s = c * tanh(raw / c)`` (``c = scale_bound``) keeps the scale in
    ``(e^-c, e^c)``; with the network's last layer zero-initialised the block starts as
    the identity. ``logdet = sum log s(x1)``. Input ``(B, C, H, W)``, ``C >= 2``;
    ``kernel_size`` that of the net's outer convolutions (:class:`~fvae.flows.nets.CouplingNet`).
    """

    def __init__(self, channels: int, width: int, scale_bound: float = 2.0, kernel_size: int = 3):
        super().__init__()
        self.split = channels // 2
        self.net = CouplingNet(self.split, 2 * (channels - self.split), width, kernel_size)
        self.scale_bound = scale_bound

    def _scale_shift(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, shift = to_fp32(self.net(x1)).chunk(2, dim=1)
        return soft_clamp(raw, self.scale_bound), shift

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        log_s, t = self._scale_shift(x1)
        y2 = x2 * torch.exp(log_s) + t
        return torch.cat([x1, y2], dim=1), sum_except_batch(log_s)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        log_s, t = self._scale_shift(y1)
        return torch.cat([y1, (y2 - t) * torch.exp(-log_s)], dim=1)


class AdditiveCoupling(FlowBlock):
    """``y1 = x1``, ``y2 = x2 + t(x1)``: volume preserving, ``logdet = 0`` (NICE)."""

    def __init__(self, channels: int, width: int, kernel_size: int = 3):
        super().__init__()
        self.split = channels // 2
        self.net = CouplingNet(self.split, channels - self.split, width, kernel_size)

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        return torch.cat([x1, x2 + to_fp32(self.net(x1))], dim=1), zero_logdet(x)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        return torch.cat([y1, y2 - to_fp32(self.net(y1))], dim=1)
