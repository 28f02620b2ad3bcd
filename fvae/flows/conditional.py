"""Conditional flows ``F_x(u)``: invertible in ``u`` for every context ``x``.

A conditional step follows the flow protocol with the context as a second argument:
``forward(u, x) -> (y, logdet)``, ``inverse(y, x) -> u``. :class:`ConditionalFlow`
interleaves such steps with unconditional flows, as in the paper's example

    f1 = F1(sigma_1(x) * u + mu_1(x)),  f2 = F2(sigma_2(x) * f1 + mu_2(x)),
    F_x(u) = sigma_3(x) * f2 + mu_3(x),

and the log-dets add up.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fvae.flows.base import soft_clamp, sum_except_batch
from fvae.fp32 import to_fp32


class ConditionalTransform(nn.Module):
    """Base class of the steps that take the context ``x``."""


class ConditionalAffine(ConditionalTransform):
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

    def forward(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.mean_log_sigma(x)
        return u * torch.exp(log_sigma) + mu, sum_except_batch(log_sigma)

    def inverse(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mu, log_sigma = self.mean_log_sigma(x)
        return (y - mu) * torch.exp(-log_sigma)


class ConditionalShift(ConditionalTransform):
    """``y = sigma * u + mu(x)`` with one trained scalar ``sigma > 0``: the f-VAE's
    ``v = sigma1 * u + E(x)``. ``logdet = D * log sigma``, ``D`` the size of ``u``."""

    def __init__(self, net: nn.Module, sigma_init: float = 1.0):
        super().__init__()
        self.net = net
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = u[0].numel() * self.log_sigma
        return self.sigma * u + to_fp32(self.net(x)), logdet.expand(u.shape[0])

    def inverse(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (y - to_fp32(self.net(x))) / self.sigma


class ConditionalFlow(nn.Module):
    """``F_x = step_n o ... o step_1``: conditional steps receive ``x``, flows do not."""

    def __init__(self, *steps: nn.Module):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = u.new_zeros(u.shape[0])
        for step in self.steps:
            u, ld = step(u, x) if isinstance(step, ConditionalTransform) else step(u)
            logdet = logdet + ld
        return u, logdet

    def inverse(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for step in reversed(self.steps):
            y = step.inverse(y, x) if isinstance(step, ConditionalTransform) else step.inverse(y)
        return y
