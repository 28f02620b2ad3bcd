"""The f-VAE: ``F_x(u) = F(sigma1 * u + E(x))``, ``q(x|z) = N(x; G(F^-1(z)), sigma2^2 I)``.

With ``v = sigma1 * u + E(x)``, ``G(F^-1(z)) = G(v)`` and eq. A becomes

    L(x) = E_u [ ||G(v) - x||^2 / (2 sigma2^2) + D log sigma2 + (D/2) log 2 pi
                 + ||F(v)||^2 / 2 - log|det dF(v)/dv| - D log sigma1 - ||u||^2 / 2 ].

``z`` has the size of ``x``. Sampling: ``z ~ N(0, I)``, ``x = G(F^-1(z))``.

With a global code (``global_dim = d > 0``) the latent is ``(c, z')``, ``d + D`` values, and

    c = mu_c(x) + sigma_c(x) * u_c,    z = F(sigma1 * u + E(x)),    z'_top = (z_top - m(c)) / s(c)

with ``z_top`` the top level of ``F``'s output; ``(c, z')`` is ``N(0, I)`` under the prior, so
``c ~ N(0, I)`` and ``z_top ~ N(m(c), s(c)^2)``: a low-dimensional code for the global shape
beside the full-size ``z``. It is still an f-VAE posterior ``F_x(u)`` (the paper's composite
form, a conditional affine step after ``F``), so eq. A stays the bound, with
``log|det| = sum log sigma_c + D log sigma1 + log|det dF/dv| - sum log s(c)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fvae.config import ModelConfig
from fvae.flows.conditional import ConditionalAffine, ConditionalFlow, ConditionalShift
from fvae.flows.glow import MultiScaleGlow
from fvae.models.base import LatentFlowModel, Posterior
from fvae.models.nets import AffineContext, CodeToMap, Decoder, Encoder, GlobalEncoder


def encoded_shape(config: ModelConfig) -> tuple[int, int, int]:
    """The shape of ``E(x)``: ``(C * 4^L, H / 2^L, W / 2^L)``, checking divisibility."""
    c, h, w = config.image_shape
    scale = 2 ** config.encoder_levels
    if h % scale or w % scale:
        raise ValueError(f"{config.encoder_levels} squeeze levels need height and width divisible by {scale}, "
                         f"got {h}x{w}")
    return (c * scale * scale, h // scale, w // scale)


def make_encoder(config: ModelConfig) -> Encoder:
    return Encoder(config.image_shape[0], config.encoder_levels, config.encoder_blocks, config.encoder_hidden)


class GlobalCode(nn.Module):
    """The global code of an f-VAE: its posterior ``c = mu_c(x) + sigma_c(x) * u_c`` (``(B, d)``)
    and, given ``c``, the Gaussian prior ``N(m(c), s(c)^2)`` of the top level of ``F``'s output,
    shaped ``top_shape``; ``m`` and ``s`` start at 0 and 1, so the prior starts as ``N(0, I)``."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int, top_shape: tuple[int, int, int]):
        super().__init__()
        self.dim, self.top_shape = dim, tuple(top_shape)
        self.top_size = math.prod(top_shape)
        self.posterior = ConditionalAffine(GlobalEncoder(image_shape, dim))
        c, h, w = top_shape
        self.prior = ConditionalAffine(CodeToMap(dim, (2 * c, h, w)))

    def whiten(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` ``(B, n)`` (F's output, flattened, its top level last) -> ``(z', -sum log s(c))``."""
        rest, top = z[:, :-self.top_size], z[:, -self.top_size:]
        m, log_s = self.prior.mean_log_sigma(c)
        top = (top.view(-1, *self.top_shape) - m) * torch.exp(-log_s)
        return torch.cat([rest, top.flatten(1)], dim=1), -log_s.flatten(1).sum(1)

    def color(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`whiten`."""
        rest, top = z[:, :-self.top_size], z[:, -self.top_size:]
        return torch.cat([rest, self.prior(top.view(-1, *self.top_shape), c)[0].flatten(1)], dim=1)


class FVAE(LatentFlowModel):
    """The f-VAE. ``inner`` is the conditional part ``u -> v`` (here ``sigma1 * u + E(x)``),
    ``flow`` the unconditional ``F``, ``decoder`` ``G``, ``log_sigma2`` the decoder's scale,
    ``code`` the optional :class:`GlobalCode`."""

    kind = "fvae"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.flow_shape = encoded_shape(config)
        self.inner = self.build_inner(config)
        self.flow = MultiScaleGlow(self.flow_shape, config.flow_levels, config.flow_steps, config.flow_width,
                                   config.coupling, config.mixing, squeeze_first=False,
                                   top_steps=config.flow_top_steps, split_width=config.split_prior_width)
        self.decoder = Decoder(config.image_shape[0], config.encoder_levels, config.encoder_blocks,
                               config.encoder_hidden)
        self.log_sigma2 = nn.Parameter(torch.tensor(math.log(config.sigma2_init)),
                                       requires_grad=config.sigma2_trainable)
        self.code = (GlobalCode(config.image_shape, config.global_dim, self.flow.out_shapes[-1])
                     if config.global_dim else None)
        self.latent_shape = (config.global_dim + math.prod(self.flow_shape),) if self.code is not None else self.flow_shape

    def build_inner(self, config: ModelConfig) -> ConditionalFlow:
        return ConditionalFlow(ConditionalShift(make_encoder(config), config.sigma1_init))

    def posterior(self, x: torch.Tensor, u: torch.Tensor) -> Posterior:
        if self.code is None:
            v, logdet_inner = self.inner(u, x)
            z, logdet_flow = self.flow(v)
            return Posterior(z, logdet_inner + logdet_flow, v)
        c, logdet_code = self.code.posterior(u[:, :self.code.dim], x)
        v, logdet_inner = self.inner(u[:, self.code.dim:].view(-1, *self.flow_shape), x)
        z, logdet_flow = self.flow(v)
        z, logdet_prior = self.code.whiten(z.flatten(1), c)
        return Posterior(torch.cat([c, z], dim=1), logdet_code + logdet_inner + logdet_flow + logdet_prior, v)

    def decoder_log_prob(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.gaussian_decoder_log_prob(x, self.decoder(v), self.log_sigma2)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        if self.code is not None:
            c, z = z[:, :self.code.dim], z[:, self.code.dim:]
            z = self.code.color(z, c).view(-1, *self.flow_shape)
        return self.decoder(self.flow.inverse(z))

    def scales(self) -> dict[str, torch.Tensor]:
        scales = {"sigma2": self.log_sigma2.exp().detach()}
        first = self.inner.steps[0]
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

    def build_inner(self, config: ModelConfig) -> ConditionalFlow:
        shape = encoded_shape(config)
        inner_flow = MultiScaleGlow(shape, 1, config.inner_flow_steps, config.flow_width, config.coupling,
                                    config.mixing, squeeze_first=False)
        return ConditionalFlow(
            ConditionalAffine(AffineContext(make_encoder(config), shape[0])),
            inner_flow,
            ConditionalAffine(AffineContext(make_encoder(config), shape[0])),
        )
