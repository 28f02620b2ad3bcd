"""Case 2, a Glow on Gaussian-dequantized data: ``E = G =`` identity, a fixed small ``sigma``.

``F_x(u) = F(sigma * u + x)``, ``q(x|z) = N(x; F^-1(z), sigma^2 I)``. The reconstruction
term has no parameters and eq. A reduces to ``-log p_F(x + sigma * u)``, the flow's
negative log-density of the dequantized data (computed here through the general loss).
"""
from __future__ import annotations

import math

import torch

from fvae.config import ModelConfig
from fvae.errors import InputError
from fvae.flows.glow import MultiScaleGlow
from fvae.models.base import LatentFlowModel, Posterior, gaussian_log_prob


class Glow(LatentFlowModel):
    """A multi-scale Glow ``F`` seen as the paper's case 2."""

    kind = "glow"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.latent_shape = tuple(config.model_shape)
        self.flow = MultiScaleGlow(self.latent_shape, config.flow_levels, config.flow_steps,
                                   config.flow_widths, config.coupling, config.mixing, squeeze_first=True,
                                   split_width=config.split_prior_width, num_classes=config.num_conditions,
                                   class_couplings=config.class_couplings)
        self.build_prior(self.flow.top_dims)
        self.register_buffer("log_sigma", torch.tensor(math.log(config.dequant_sigma)))

    def posterior(self, x: torch.Tensor, u: torch.Tensor, labels: torch.Tensor | None = None) -> Posterior:
        v = x + torch.exp(self.log_sigma) * u
        z, logdet = self.flow(v, labels)
        return Posterior(z, logdet + v[0].numel() * self.log_sigma, v)

    def decoder_log_prob(self, x: torch.Tensor, v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return gaussian_log_prob(x, v, self.log_sigma)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow.inverse(z, labels)

    def posterior_mode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow(x, labels)[0]

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log p_F(x)`` (``log p_F(x|y)``) in nats, ``(B,)``: the flow's exact density at images
        ``x`` in ``[0, 1)``."""
        labels = self.prior.conditions(labels, len(x))
        z, logdet = self.flow(self.to_model_space(x), labels)
        return self.prior.log_prob(z, labels) + logdet + self.log_jacobian

    @torch.no_grad()
    def exact_marginal_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """A class-conditional Glow's exact ``log p(x) = log sum_y p(x|y) p(y)``, ``(B,)``, with
        the same dequantization noise (padding) for every class."""
        if not self.num_classes:
            raise InputError("the marginal over classes needs a class-conditional model (model.num_classes > 0)")
        xm = self.to_model_space(x)
        per_class = []
        for y in range(self.num_classes):
            labels = self._all(x, y)
            z, logdet = self.flow(xm, labels)
            per_class.append(self.prior.log_prob(z, labels) + logdet)
        return torch.logsumexp(torch.stack(per_class, 1) + self.prior.log_class_prior, dim=1) + self.log_jacobian
