"""The one protocol every flow block follows, and their composition.

A flow block is a :class:`FlowBlock`, an ``nn.Module`` with

* ``forward(x, context=None) -> (y, logdet)``: ``y = f(x; context)`` and
  ``logdet = log|det df/dx|``, shape ``(B,)``;
* ``inverse(y, context=None) -> x``: the exact inverse ``x = f^-1(y; context)``.

The context is what a conditional block is conditioned on: the image ``x`` for the steps of
the f-VAE's posterior ``F_x``, the class labels for class-conditional priors. Blocks that do
not depend on it ignore it, so any blocks compose in a :class:`FlowSequence`, which hands the
same context to each.
"""
from __future__ import annotations

import torch
from torch import nn

from fvae.errors import InputError


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``bound * tanh(x / bound)``: the identity near 0, smoothly limited to ``(-bound, bound)``."""
    return bound * torch.tanh(x / bound)


class _Stack(torch.autograd.Function):
    """``torch.stack(tensors)`` whose backward hands the inputs their gradients with one ``unbind``
    (autograd's own dispatches a ``select`` per input)."""

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.stack(tensors)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return grad.unbind(0)


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(tensors)``, ``K`` tensors of one shape -> ``(K, *shape)``, in two ops forward and
    backward together: for building several flow steps' parameters in one batch."""
    return _Stack.apply(*tensors)


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)`` (one op, no copy of a strided ``x``)."""
    return x.sum(dim=tuple(range(1, x.dim()))) if x.dim() > 1 else x


def class_weights(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Labels as rows of class weights ``(B, num_classes)``: class indices ``(B,)`` one-hot, or
    already weights (a soft label, such as ``(1 - t) e_a + t e_b`` between two classes) as they are.
    Class-conditional parameters are linear in these rows, so a soft label mixes the classes'."""
    if labels.dim() == 1:
        return torch.nn.functional.one_hot(labels.long(), num_classes).to(dtype)
    return labels.to(dtype)


def class_channel_bias(labels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The labels' rows of a per-class table ``(num_classes, C)``, mixed by their class weights
    (:func:`class_weights`) and shaped ``(B, C, 1, 1)`` to add to every pixel of a feature map."""
    return (class_weights(labels, table.shape[0], table.dtype) @ table)[:, :, None, None]


def zero_logdet(x: torch.Tensor) -> torch.Tensor:
    """The log-det of a volume-preserving block, ``(B,)`` zeros."""
    return x.new_zeros(x.shape[0])


class FlowBlock(nn.Module):
    """Base of every flow block: ``forward(x, context=None) -> (y, logdet)``, ``inverse(y, context=None)``."""

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        raise NotImplementedError


class ConditionalBlock(FlowBlock):
    """A block that needs its context: calling it without one is a clear error."""

    def require(self, context):
        if context is None:
            raise InputError(f"{type(self).__name__} is conditional: pass its context (forward(x, context))")
        return context


class FlowSequence(FlowBlock):
    """``f = f_n o ... o f_1``, every block given the same context; log-dets add up.

    Conditional steps and unconditional flows interleave freely, as in the paper's example
    ``f1 = F1(sigma_1(x) u + mu_1(x))``, ``f2 = F2(sigma_2(x) f1 + mu_2(x))``,
    ``F_x(u) = sigma_3(x) f2 + mu_3(x)``.
    """

    def __init__(self, *blocks: FlowBlock):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = zero_logdet(x)
        for block in self.blocks:
            x, ld = block(x, context)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        for block in reversed(self.blocks):
            y = block.inverse(y, context)
        return y
