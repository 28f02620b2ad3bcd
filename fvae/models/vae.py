"""Case 1, the VAE: ``F_x(u) = sigma(x) * u + mu(x)``, ``q(x|z) = N(x; G(z), sigma2^2 I)``.

The log-det and the two Gaussian terms of eq. A integrate to the closed form

    KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum (mu^2 + sigma^2 - 1 - 2 log sigma),

which the loss uses (against a learned Gaussian prior, class-conditional or not, its own closed
form; a mixture prior has none and the loss samples it); the importance-weighted bound uses the
sampled terms.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fvae.config import ModelConfig
from fvae.flows.conditional import ConditionalAffine
from fvae.models.base import LatentFlowModel, Posterior
from fvae.models.fvae import encoded_shape, make_decoder, make_encoder
from fvae.models.nets import FlatHead, Unflatten


class VAE(LatentFlowModel):
    """A convolutional VAE with a ``latent_dim``-dimensional Gaussian latent."""

    kind = "vae"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        features = encoded_shape(config)
        self.latent_shape = (config.latent_dim,)
        self.encoder = ConditionalAffine(
            nn.Sequential(make_encoder(config), FlatHead(math.prod(features), 2 * config.latent_dim)))
        self.decoder = nn.Sequential(Unflatten(config.latent_dim, features), make_decoder(config))
        self.log_sigma2 = nn.Parameter(torch.tensor(math.log(config.sigma2_init)),
                                       requires_grad=config.sigma2_trainable)
        self.build_prior(config.latent_dim)

    def posterior(self, x: torch.Tensor, u: torch.Tensor, labels: torch.Tensor | None = None) -> Posterior:
        mu, log_sigma = self.encoder.mean_log_sigma(x)
        z = mu + torch.exp(log_sigma) * u
        return Posterior(z, log_sigma.sum(1), z, self.prior.gaussian_kl(mu, log_sigma, labels))

    def decoder_log_prob(self, x: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.gaussian_decoder_log_prob(x, self.generate(z, labels), self.log_sigma2)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        unflatten, decoder = self.decoder
        return decoder(unflatten(z), labels)

    def scales(self) -> dict[str, torch.Tensor]:
        return {"sigma2": self.log_sigma2.exp().detach()}
