"""Affine and additive coupling layers (Dinh et al., 2017; Kingma & Dhariwal, 2018)."""
from __future__ import annotations

import torch

from fvae.errors import InputError
from fvae.flows.base import FlowBlock, soft_clamp, sum_except_batch, zero_logdet
from fvae.flows.nets import CouplingNet
from fvae.fp32 import to_fp32


class Coupling(FlowBlock):
    """Split ``x = (x1, x2)`` on channels and transform ``x2`` by a net of ``x1``; with
    ``num_classes`` the net takes the class labels too (the context, ``(B,)`` or ``(B, num_classes)``:
    :class:`~fvae.flows.nets.CouplingNet`), so that ``y2 = f(x2; x1, y)``."""

    def __init__(self, channels: int, out_per_channel: int, width: int, kernel_size: int, num_classes: int):
        super().__init__()
        self.split = channels // 2
        self.num_classes = num_classes
        self.net = CouplingNet(self.split, out_per_channel * (channels - self.split), width, kernel_size,
                               num_classes)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x1, x2)``: the first ``split`` channels and the rest."""
        return x.split((self.split, x.shape[1] - self.split), dim=1)

    def _net(self, x1: torch.Tensor, context) -> torch.Tensor:
        if not self.num_classes:
            return to_fp32(self.net(x1))
        if context is None:
            raise InputError(f"{type(self).__name__} is class-conditional: pass the labels as its context")
        return to_fp32(self.net(x1, context))


class AffineCoupling(Coupling):
    """Split ``x = (x1, x2)`` on channels; ``y1 = x1``, ``y2 = s(x1) * x2 + t(x1)``.

    ``log s = c * tanh(raw / c)`` (``c = scale_bound``) keeps the scale in
    ``(e^-c, e^c)``; with the network's last layer zero-initialised the block starts as
    the identity. ``logdet = sum log s(x1)``. Input ``(B, C, H, W)``, ``C >= 2``;
    ``kernel_size`` that of the net's outer convolutions (:class:`~fvae.flows.nets.CouplingNet`);
    with ``num_classes`` ``s`` and ``t`` depend on the class too (:class:`Coupling`).
    """

    def __init__(self, channels: int, width: int, scale_bound: float = 2.0, kernel_size: int = 3,
                 num_classes: int = 0):
        super().__init__(channels, 2, width, kernel_size, num_classes)
        self.scale_bound = scale_bound

    def _scale_shift(self, x1: torch.Tensor, context) -> tuple[torch.Tensor, torch.Tensor]:
        raw, shift = self._net(x1, context).chunk(2, dim=1)
        return soft_clamp(raw, self.scale_bound), shift

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = self._halves(x)
        log_s, t = self._scale_shift(x1, context)
        y2 = torch.addcmul(t, x2, torch.exp(log_s))
        return torch.cat([x1, y2], dim=1), sum_except_batch(log_s)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        y1, y2 = self._halves(y)
        log_s, t = self._scale_shift(y1, context)
        return torch.cat([y1, (y2 - t) * torch.exp(-log_s)], dim=1)


class AdditiveCoupling(Coupling):
    """``y1 = x1``, ``y2 = x2 + t(x1)``: volume preserving, ``logdet = 0`` (NICE); with
    ``num_classes``, ``t(x1, y)``."""

    def __init__(self, channels: int, width: int, kernel_size: int = 3, num_classes: int = 0):
        super().__init__(channels, 1, width, kernel_size, num_classes)

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = self._halves(x)
        return torch.cat([x1, x2 + self._net(x1, context)], dim=1), zero_logdet(x)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        y1, y2 = self._halves(y)
        return torch.cat([y1, y2 - self._net(y1, context)], dim=1)
