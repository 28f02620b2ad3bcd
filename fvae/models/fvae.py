"""The f-VAE: ``F_x(u) = F(sigma1 * u + E(x))``, ``q(x|z) = N(x; G(F^-1(z)), sigma2^2 I)``.

With ``v = sigma1 * u + E(x)``, ``G(F^-1(z)) = G(v)`` and eq. A becomes

    L(x) = E_u [ ||G(v) - x||^2 / (2 sigma2^2) + D log sigma2 + (D/2) log 2 pi
                 + ||F(v)||^2 / 2 - log|det dF(v)/dv| - D log sigma1 - ||u||^2 / 2 ].

``z`` has the size of ``x``. Sampling: ``z ~ N(0, I)``, ``x = G(F^-1(z))``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fvae.config import ModelConfig
from fvae.errors import InputError
from fvae.flows.base import FlowSequence
from fvae.flows.conditional import ConditionalAffine, ConditionalShift
from fvae.flows.glow import MultiScaleGlow
from fvae.models.base import LatentFlowModel, Posterior
from fvae.models.nets import AffineContext, Decoder, Encoder


def encoded_shape(config: ModelConfig) -> tuple[int, int, int]:
    """The shape of ``E(x)``: ``(C * 4^L, H / 2^L, W / 2^L)`` of the (padded) ``model_shape``,
    checking divisibility."""
    c, h, w = config.model_shape
    scale = 2 ** config.encoder_levels
    if h % scale or w % scale:
        raise InputError(f"{config.encoder_levels} squeeze levels need height and width divisible by {scale}, "
                         f"got {h}x{w}; set model.pad_to or use fewer levels")
    return (c * scale * scale, h // scale, w // scale)


def make_encoder(config: ModelConfig) -> Encoder:
    return Encoder(config.image_shape[0], config.encoder_levels, config.encoder_blocks, config.encoder_hidden)


def make_decoder(config: ModelConfig) -> Decoder:
    """``G``, the mirror of :func:`make_encoder`; class-conditional with ``class_decoder``."""
    return Decoder(config.image_shape[0], config.encoder_levels, config.encoder_blocks, config.encoder_hidden,
                   config.num_conditions if config.class_decoder else 0)


class FVAE(LatentFlowModel):
    """The f-VAE. ``inner`` is the conditional part ``u -> v`` (here ``sigma1 * u + E(x)``),
    ``flow`` the unconditional ``F``, ``decoder`` ``G``, ``log_sigma2`` the decoder's scale."""

    kind = "fvae"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.latent_shape = encoded_shape(config)
        self.inner = self.build_inner(config)
        self.flow = MultiScaleGlow(self.latent_shape, config.flow_levels, config.flow_steps,
                                   config.flow_widths, config.coupling, config.mixing, squeeze_first=False,
                                   split_width=config.split_prior_width, num_classes=config.num_conditions,
                                   class_couplings=config.class_couplings)
        self.build_prior(self.flow.top_dims)
        self.decoder = make_decoder(config)
        self.log_sigma2 = nn.Parameter(torch.tensor(math.log(config.sigma2_init)),
                                       requires_grad=config.sigma2_trainable)

    def build_inner(self, config: ModelConfig) -> FlowSequence:
        return FlowSequence(ConditionalShift(make_encoder(config), config.sigma1_init))

    def posterior(self, x: torch.Tensor, u: torch.Tensor, labels: torch.Tensor | None = None) -> Posterior:
        v, logdet_inner = self.inner(u, x)
        z, logdet_flow = self.flow(v, labels)
        return Posterior(z, logdet_inner + logdet_flow, v)

    def decoder_log_prob(self, x: torch.Tensor, v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.gaussian_decoder_log_prob(x, self.decoder(v, labels), self.log_sigma2)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.flow.inverse(z, labels), labels)

    def scales(self) -> dict[str, torch.Tensor]:
        scales = {"sigma2": self.log_sigma2.exp().detach()}
        first = self.inner.blocks[0]
        if isinstance(first, ConditionalShift):
            scales["sigma1"] = first.sigma.detach()
        return scales


class CompositeFVAE(FVAE):
    """An f-VAE whose conditional part interleaves conditional affine steps and a flow:

        v = sigma_2(x) * F1(sigma_1(x) * u + mu_1(x)) + mu_2(x),   z = F(v),

    the paper's composite example (its ``F_x``) with ``F`` outermost, so that the decoder
    ``G(F^-1(z)) = G(v)`` stays as cheap as in the f-VAE.
    """

    kind = "composite"

    def build_inner(self, config: ModelConfig) -> FlowSequence:
        shape = encoded_shape(config)
        width = config.inner_flow_width or config.flow_widths[0]
        inner_flow = MultiScaleGlow(shape, 1, config.inner_flow_steps, width, config.coupling, config.mixing,
                                    squeeze_first=False)
        return FlowSequence(
            ConditionalAffine(AffineContext(make_encoder(config), shape[0])),
            inner_flow,
            ConditionalAffine(AffineContext(make_encoder(config), shape[0])),
        )
