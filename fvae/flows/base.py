"""The one protocol every flow block follows, and their composition.

A flow block is an ``nn.Module`` with

* ``forward(x) -> (y, logdet)``: ``y = f(x)`` and ``logdet = log|det df/dx|``, shape ``(B,)``;
* ``inverse(y) -> x``: the exact inverse ``x = f^-1(y)``.
"""
from __future__ import annotations

import torch
from torch import nn


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``bound * tanh(x / bound)``: the identity near 0, smoothly limited to ``(-bound, bound)``."""
    return bound * torch.tanh(x / bound)


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


class FlowSequence(nn.Module):
    """``f = f_n o ... o f_1``; log-dets add up."""

    def __init__(self, *blocks: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for block in self.blocks:
            x, ld = block(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return y
