"""An autoregressive Gaussian density over ``d`` entries: the top prior ``model.prior_ar_width``.

Each entry is Gaussian given the ones before it (in the flattened ``(C, H, W)`` order, channel
first: on a ``C x 1 x 1`` top, autoregressive over channels, as mAR-SCF's prior, Bhattacharyya
et al. 2020):

    q(z | y) = prod_i N(z_i; m_i(z_<i, y), s_i(z_<i, y)^2),

``m`` and ``log s`` from one masked network (MADE, Germain et al. 2015: two hidden layers of
``width`` units whose masks let output ``i`` see only inputs ``< i``), the class ``y`` as a
learned bias on its first hidden layer. The last layer starts at zero, so the density starts as
``N(0, I)``. It is normalised whatever the weights (a product of normalised conditionals), so a
bound that uses it stays a bound. Sampling inverts it entry by entry: ``d`` passes of the net.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from fvae.flows.base import class_weights, soft_clamp
from fvae.models.normal import standard_normal_log_prob


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b``: a linear layer whose weight is masked by the fixed ``mask`` ``(out, in)``."""

    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.linear(x, self.weight * self.mask, self.bias)


def made_masks(dims: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The masks of a MADE with inputs of degrees ``1..d``, two hidden layers of ``width`` units of
    degrees cycling through ``1..d-1`` and ``2d`` outputs (means, then log-scales) of degrees ``1..d``:
    a unit sees a unit of the layer below when its degree is at least that one's, an output of degree
    ``i`` the hidden units of degree ``< i``. Returns ``(width, d)``, ``(width, width)``, ``(2d, width)``."""
    inputs = torch.arange(1, dims + 1)
    hidden = torch.arange(width) % max(1, dims - 1) + 1
    outputs = inputs.repeat(2)
    return (hidden[:, None] >= inputs[None]), (hidden[:, None] >= hidden[None]), (outputs[:, None] > hidden[None])


class AutoregressiveGaussian(nn.Module):
    """``q(z | y)`` over ``(B, dims)`` (module docstring); ``num_classes > 0`` makes it take labels
    (``(B,)`` indices or ``(B, C)`` weights)."""

    def __init__(self, dims: int, width: int, num_classes: int = 0, scale_bound: float = 5.0):
        super().__init__()
        self.dims, self.num_classes, self.scale_bound = dims, num_classes, scale_bound
        first, middle, last = made_masks(dims, width)
        self.first, self.middle, self.last = MaskedLinear(first), MaskedLinear(middle), MaskedLinear(last)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)
        self.class_bias = nn.Parameter(torch.zeros(num_classes, width)) if num_classes else None

    def conditionals(self, z: torch.Tensor, labels: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``m(z_<i, y)`` and ``log s(z_<i, y)``, each ``(B, dims)``, for ``z`` ``(B, dims)``."""
        h = self.first(z)
        if self.class_bias is not None:
            h = h + class_weights(labels, self.num_classes, h.dtype) @ self.class_bias
        h = self.middle(functional.relu(h))
        mean, log_scale = self.last(functional.relu(h)).chunk(2, dim=1)
        return mean, soft_clamp(log_scale, self.scale_bound)

    def log_prob(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log q(z | y)``: ``(B, dims) -> (B,)``."""
        mean, log_scale = self.conditionals(z, labels)
        eps = (z - mean) * torch.exp(-log_scale)
        return standard_normal_log_prob(eps) - log_scale.sum(1)

    def whiten(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``eps = (z - m(z_<i, y)) / s(z_<i, y)``, the inverse of :meth:`invert`: ``(B, dims) -> (B, dims)``."""
        mean, log_scale = self.conditionals(z, labels)
        return (z - mean) * torch.exp(-log_scale)

    def invert(self, eps: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` with ``z_i = m_i(z_<i, y) + s_i(z_<i, y) eps_i``, entry by entry: ``(B, dims) -> (B, dims)``
        (``eps`` of standard deviation ``T`` draws at temperature ``T``)."""
        z = torch.zeros_like(eps)
        for i in range(self.dims):
            mean, log_scale = self.conditionals(z, labels)
            z[:, i] = mean[:, i] + torch.exp(log_scale[:, i]) * eps[:, i]
        return z
