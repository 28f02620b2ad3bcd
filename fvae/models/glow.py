"""Case 2, a Glow on Gaussian-dequantized data: ``E = G =`` identity, a fixed small ``sigma``.

``F_x(u) = F(sigma * u + x)``, ``q(x|z) = N(x; F^-1(z), sigma^2 I)``. The reconstruction
term has no parameters and eq. A reduces to ``-log p_F(x + sigma * u)``, the flow's
negative log-density of the dequantized data (computed here through the general loss).
"""
from __future__ import annotations

import math

import torch

from fvae.config import ModelConfig
from fvae.flows.glow import MultiScaleGlow
from fvae.models.base import LatentFlowModel, Posterior, gaussian_log_prob, standard_normal_log_prob


class Glow(LatentFlowModel):
    """A multi-scale Glow ``F`` seen as the paper's case 2."""

    kind = "glow"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.latent_shape = tuple(config.image_shape)
        self.flow = MultiScaleGlow(self.latent_shape, config.flow_levels, config.flow_steps, config.flow_width,
                                   config.coupling, config.mixing, squeeze_first=True,
                                   top_steps=config.flow_top_steps, split_width=config.split_prior_width)
        self.register_buffer("log_sigma", torch.tensor(math.log(config.dequant_sigma)))

    def posterior(self, x: torch.Tensor, u: torch.Tensor) -> Posterior:
        v = x + torch.exp(self.log_sigma) * u
        z, logdet = self.flow(v)
        return Posterior(z, logdet + self.num_dims * self.log_sigma, v)

    def decoder_log_prob(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(x, v, self.log_sigma)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow.inverse(z)

    def posterior_mode(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow(x)[0]

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``log p_F(x)`` in nats, ``(B,)``: the flow's exact density at images ``x`` in ``[0, 1)``."""
        z, logdet = self.flow(self.to_model_space(x))
        return standard_normal_log_prob(z) + logdet + self.log_jacobian
