"""GroupNorm followed by ReLU as one autograd node: ``y = relu(GN(x) + shift)``.

The residual blocks of ``E`` and ``G`` (:class:`fvae.models.nets.ResidualBlock`) each run a
GroupNorm and a ReLU; as two autograd nodes they save GroupNorm's statistics and ReLU's output as
outputs of ops (each saved and unpacked through a ``detach``) and run two node calls in backward.
One node does the same arithmetic, ``native_group_norm`` and an in-place ReLU forward,
``threshold_backward`` and ``native_group_norm_backward`` backward, with the statistics saved as
the node's intermediates, so that a step dispatches four fewer ops a block
(``benchmarks/step_ops.py``). Values and gradients are those of ``F.relu(F.group_norm(x) + shift)``
(gradcheck-tested in float64), in any dtype and memory format ``native_group_norm`` accepts. Under
bf16 autocast on a CPU a channels-last input is normalised in fp32: PyTorch's CPU GroupNorm takes
2-3x as long on bf16 channels-last maps as on fp32 ones, longer than the cast
(``python benchmarks/cpu_precision.py``: the mnist VAE's bf16 step went from 0.79x to 1.03x the
speed of its fp32 step).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class _GroupNormReLU(torch.autograd.Function):
    """``relu(GN(x; groups, weight, bias, eps) + shift)``; ``shift`` broadcasts to ``x`` or is None."""

    @staticmethod
    def forward(ctx, x, weight, bias, shift, groups: int, eps: float):
        if x.dtype == torch.bfloat16 and x.device.type == "cpu" and not x.is_contiguous():
            x = x.float()  # a CPU's channels-last GroupNorm runs 2-3x slower in bf16 than in fp32
        n, c, hw = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        h, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, hw, groups, eps)
        if shift is not None:
            h = h.add_(shift.to(h.dtype))
        y = h.relu_()
        ctx.save_for_backward(x, weight, mean, rstd, y)
        ctx.shape = (n, c, hw, groups)
        ctx.shift_shape = None if shift is None else shift.shape
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mean, rstd, y = ctx.saved_tensors
        n, c, hw, groups = ctx.shape
        grad_h = torch.ops.aten.threshold_backward(grad_y, y, 0)
        need = ctx.needs_input_grad
        grad_x, grad_w, grad_b = torch.ops.aten.native_group_norm_backward(
            grad_h, x, mean, rstd, weight, n, c, hw, groups, [need[0], need[1], need[2]])
        grad_shift = grad_h.sum_to_size(ctx.shift_shape) if need[3] else None
        return grad_x, grad_w, grad_b, grad_shift, None, None


class GroupNormReLU(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state-dict keys) with the ReLU after it fused in:
    ``forward(x (B, C, H, W), shift=None) -> relu(GN(x) + shift)``, ``shift`` e.g. ``(B, C, 1, 1)``."""

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        return _GroupNormReLU.apply(x, self.weight, self.bias, shift, self.num_groups, self.eps)
