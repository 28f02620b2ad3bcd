"""Conditional steps of ``F_x(u)``: invertible in ``u`` for every context ``x``.

Each is a :class:`~fvae.flows.base.ConditionalBlock`, ``forward(u, context) -> (y, logdet)``,
``inverse(y, context) -> u``, the context the image ``x``. In a
:class:`~fvae.flows.base.FlowSequence` they interleave with unconditional flows, as in the
paper's example

    f1 = F1(sigma_1(x) * u + mu_1(x)),  f2 = F2(sigma_2(x) * f1 + mu_2(x)),
    F_x(u) = sigma_3(x) * f2 + mu_3(x),

and the log-dets add up.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fvae.flows.base import ConditionalBlock, soft_clamp, sum_except_batch
from fvae.fp32 import to_fp32


class ConditionalAffine(ConditionalBlock):
    """``y = exp(log_sigma(x)) * u + mu(x)`` elementwise; ``logdet = sum log_sigma(x)``.

    ``net(x)`` returns ``cat(mu, log_sigma)`` along dim 1, each the shape of ``u``;
    ``log_sigma`` is soft-clamped to ``(-scale_bound, scale_bound)``. With ``u`` the
    standard normal this is the VAE's diagonal Gaussian posterior (the paper's case 1).
    """

    def __init__(self, net: nn.Module, scale_bound: float = 7.0):
        super().__init__()
        self.net = net
        self.scale_bound = scale_bound

    def mean_log_sigma(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = to_fp32(self.net(x)).chunk(2, dim=1)
        return mu, soft_clamp(log_sigma, self.scale_bound)

    def forward(self, u: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.mean_log_sigma(self.require(context))
        return u * torch.exp(log_sigma) + mu, sum_except_batch(log_sigma)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        mu, log_sigma = self.mean_log_sigma(self.require(context))
        return (y - mu) * torch.exp(-log_sigma)


class ConditionalShift(ConditionalBlock):
    """``y = sigma * u + mu(x)`` with one trained scalar ``sigma > 0``: the f-VAE's
    ``v = sigma1 * u + E(x)``. ``logdet = D * log sigma``, ``D`` the size of ``u``."""

    def __init__(self, net: nn.Module, sigma_init: float = 1.0):
        super().__init__()
        self.net = net
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, u: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = u[0].numel() * self.log_sigma
        return self.sigma * u + to_fp32(self.net(self.require(context))), logdet.expand(u.shape[0])

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        return (y - to_fp32(self.net(self.require(context)))) / self.sigma
