"""An exponential moving average of a model's weights, updated in a few multi-tensor ops.

    w_ema <- w_ema + ok * (1 - d_n) (w - w_ema),   d_n = min(decay, (1 + n) / (10 + n)),

``n`` the updates made so far and ``ok`` 1 for a step that updated the model, 0 for one that was
skipped. ``d_n`` grows from 0.1 to ``decay``, so that the average does not drag the first,
fast-changing weights along for ``1 / (1 - decay)`` steps. Everything stays on the model's device:
no per-parameter Python loop, no value read back to the host, so the update can join a compiled
or graph-captured training step. Buffers are not averaged: the models' buffers are fixed once
training starts (ActNorm's flag, permutations, class frequencies), and are copied with
:meth:`ExponentialAverage.copy_from`.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialAverage:
    """The EMA of ``model``'s floating-point parameters, kept in ``module`` (a copy of ``model``
    that no gradient reaches); ``updates`` counts the updates made, on the model's device."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self._ema = [p for p in self.module.parameters() if p.is_floating_point()]
        self.updates = torch.zeros((), dtype=self._ema[0].dtype, device=self._ema[0].device)

    def copy_from(self, model: nn.Module) -> None:
        """Start the average at ``model``'s weights and buffers."""
        self.module.load_state_dict(model.state_dict())

    @torch.no_grad()
    def update(self, params: list[torch.Tensor], ok: torch.Tensor) -> None:
        """One step towards ``params`` (the model's floating parameters, in ``module``'s order),
        weighted by ``ok`` (a 0-d tensor, 1 or 0)."""
        weight = (1 - torch.clamp((1 + self.updates) / (10 + self.updates), max=self.decay)) * ok
        deltas = torch._foreach_sub(params, self._ema)
        torch._foreach_mul_(deltas, weight)
        torch._foreach_add_(self._ema, deltas)
        self.updates.add_(ok)
