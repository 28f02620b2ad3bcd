"""Affine and additive coupling layers (Dinh et al., 2017; Kingma & Dhariwal, 2018)."""
from __future__ import annotations

import torch

from fvae.errors import InputError
from fvae.flows.base import FlowBlock, soft_clamp, sum_except_batch, zero_logdet
from fvae.flows.nets import CouplingNet
from fvae.fp32 import to_fp32


class ScaleShift(torch.autograd.Function):
    """``(y2, log s) = (x2 * exp(log s) + t, log s)``, ``log s = c tanh(raw / c)``, where
    ``(raw, t) = h.chunk(2, dim=1)``: the affine coupling's elementwise part as one autograd node.

    Its backward is written out, ``dL/dx2 = g_y s``, ``dL/dlog s = g_y x2 s + g_l``,
    ``dL/draw = dL/dlog s (1 - tanh^2)``, ``dL/dt = g_y``: five ops where autograd's own chain of
    seven nodes dispatches a dozen (``benchmarks/step_ops.py``). Shapes: ``x2`` ``(B, C2, H, W)``,
    ``h`` ``(B, 2 C2, H, W)``; call it through :func:`scale_shift`.
    """

    @staticmethod
    def forward(ctx, x2: torch.Tensor, h: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
        raw, shift = h.chunk(2, dim=1)
        squashed = torch.tanh(raw / bound)
        log_s = squashed * bound
        scale = torch.exp(log_s)
        scaled = x2 * scale
        ctx.save_for_backward(squashed, scale, scaled)
        return scaled + shift, log_s

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: torch.Tensor, grad_log_s: torch.Tensor):
        squashed, scale, scaled = ctx.saved_tensors
        grad_log_s = torch.addcmul(grad_log_s, grad_y, scaled)
        grad_raw = torch.addcmul(grad_log_s, grad_log_s * squashed, squashed, value=-1)
        return grad_y * scale, torch.cat([grad_raw, grad_y], dim=1), None


def scale_shift(x2: torch.Tensor, h: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x2 * exp(log s) + t, log s)``, ``log s = bound * tanh(raw / bound)``, ``(raw, t) = h.chunk(2, 1)``
    (:class:`ScaleShift`)."""
    return ScaleShift.apply(x2, h, bound)


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

    def transform(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(y, log_s)``: the output and the per-element log-scale map ``(B, C - split, H, W)`` whose sum
        is the log-det (None for a volume-preserving coupling), so that a caller running several
        couplings can sum their maps in one op (:class:`~fvae.flows.glow.GlowLevel`)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        y, log_s = self.transform(x, context)
        return y, zero_logdet(x) if log_s is None else sum_except_batch(log_s)

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

    def transform(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = self._halves(x)
        y2, log_s = scale_shift(x2, self._net(x1, context), self.scale_bound)
        return torch.cat([x1, y2], dim=1), log_s

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        y1, y2 = self._halves(y)
        log_s, t = self._scale_shift(y1, context)
        return torch.cat([y1, (y2 - t) * torch.exp(-log_s)], dim=1)


class AdditiveCoupling(Coupling):
    """``y1 = x1``, ``y2 = x2 + t(x1)``: volume preserving, ``logdet = 0`` (NICE); with
    ``num_classes``, ``t(x1, y)``."""

    def __init__(self, channels: int, width: int, kernel_size: int = 3, num_classes: int = 0):
        super().__init__(channels, 1, width, kernel_size, num_classes)

    def transform(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, None]:
        x1, x2 = self._halves(x)
        return torch.cat([x1, x2 + self._net(x1, context)], dim=1), None

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        y1, y2 = self._halves(y)
        return torch.cat([y1, y2 - self._net(y1, context)], dim=1)
