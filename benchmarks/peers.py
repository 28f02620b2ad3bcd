"""Adapters that give fvae's models and the peers (normflows' Glow, pythae's VAE and VAE_IAF)
one interface for compare_peers.py.

Every adapter works on images ``x`` in ``[0, 1)`` (uniformly dequantized 8-bit pixels) and
reports nats on that scale, so one formula, ``bpd = (nats + D ln 256) / (D ln 2)``, serves all:

* ``train_loss(x)``: the scalar the model's own library trains on;
* ``nll(x, num_samples, labels)``: dict of per-example nats: ``elbo`` (negative ELBO), ``iw`` (the
  importance-weighted bound) or ``exact`` (flows); for a class-conditional model (fvae's, with
  ``labels``) these are ``-log p(x|y)``, and ``marginal`` bounds ``-log sum_y p(x|y) p(y)``;
* ``sample(n, temperature, labels)``: ``(n, C, H, W)`` images in ``[0, 1]``, the prior's standard
  deviation scaled by ``temperature`` (a class-conditional model's drawn for ``labels``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

import fvae
from fvae.models.base import LOG_2PI, centre_slices, pad_images, padding_log_jacobian


class FvaeAdapter:
    """One of fvae's models, built from its :class:`fvae.ModelConfig`."""

    def __init__(self, config: fvae.ModelConfig, marginal_samples: int = 10):
        self.model = fvae.model_from_config(config)
        self.exact = hasattr(self.model, "exact_log_likelihood")
        self.num_classes, self.marginal_samples = config.num_classes, marginal_samples

    def parameters(self):
        return self.model.parameters()

    def train_loss(self, x):
        return self.model.loss(x).mean() / self.model.num_dims

    @torch.no_grad()
    def nll(self, x, num_samples, labels=None, marginal=True):
        """Negative log-likelihood bounds of ``x`` in nats an image; with ``marginal`` (and classes)
        the marginal over the classes too."""
        y = labels if self.num_classes else None
        out = {"elbo": self.model.loss(x, y)}
        if self.exact:
            out["exact"] = -self.model.exact_log_likelihood(x, y)
        else:
            out["iw"] = -self.model.log_likelihood(x, num_samples, labels=y)
        if self.num_classes and marginal:
            out["marginal"] = (-self.model.exact_marginal_log_likelihood(x) if self.exact
                               else -self.model.marginal_log_likelihood(x, self.marginal_samples))
        return out

    @torch.no_grad()
    def sample(self, n, temperature=1.0, labels=None):
        return self.model.sample(n, temperature, labels if self.num_classes else None)


class NormflowsGlow:
    """normflows' multi-scale Glow built as in its Glow example (unconditional Glow base), on images
    padded to ``model_shape`` as fvae's Glow pads them (fvae.models.base.pad_images; its nats are
    reported for the real pixels, as fvae's are)."""

    exact = True

    def __init__(self, levels: int, steps: int, width: int, shape=(1, 28, 28), model_shape=(1, 28, 28)):
        import normflows as nf

        self.shape, self.model_shape = tuple(shape), tuple(model_shape)
        self.crop = centre_slices(self.shape, self.model_shape)
        self.pad_nats = -padding_log_jacobian(self.shape, self.model_shape)
        c, h, w = model_shape
        q0, merges, flows = [], [], []
        for i in range(levels):
            flows.append([nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), width, split_mode="channel", scale=True)
                          for _ in range(steps)] + [nf.flows.Squeeze()])
            if i > 0:
                merges.append(nf.flows.Merge())
                latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
            else:
                latent = (c * 2 ** (levels + 1), h // 2 ** levels, w // 2 ** levels)
            q0.append(nf.distributions.GlowBase(latent))
        self.model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
        self.num_dims = math.prod(shape)

    def parameters(self):
        return self.model.parameters()

    def train_loss(self, x):
        return self.model.forward_kld(pad_images(x, self.model_shape)) / self.num_dims

    @torch.no_grad()
    def nll(self, x, num_samples, labels=None, marginal=False):
        return {"exact": -self.model.log_prob(pad_images(x, self.model_shape), None) + self.pad_nats}

    @torch.no_grad()
    def sample(self, n, temperature=1.0, labels=None):
        return self.model.sample(n, temperature=temperature)[0][(..., *self.crop)].clamp(0, 1)


class PythaeVAE:
    """pythae's VAE or VAE_IAF with its convolutional MNIST networks, trained on its own
    objective (``mse``: a unit-variance Gaussian decoder). For an honest likelihood the
    decoder's variance is then fitted, ``sigma^2 = mean squared residual`` on training images,
    and the ELBO and IW bound are computed with ``N(x; decoder(z), sigma^2 I)``."""

    exact = False

    def __init__(self, iaf: bool, latent_dim: int = 32):
        from pythae.models import VAE, VAE_IAF, VAE_IAF_Config, VAEConfig
        from pythae.models.nn.benchmarks.mnist import Decoder_ResNet_AE_MNIST, Encoder_ResNet_VAE_MNIST

        config = (VAE_IAF_Config if iaf else VAEConfig)(input_dim=(1, 28, 28), latent_dim=latent_dim,
                                                        reconstruction_loss="mse")
        cls = VAE_IAF if iaf else VAE
        self.model = cls(config, encoder=Encoder_ResNet_VAE_MNIST(config), decoder=Decoder_ResNet_AE_MNIST(config))
        self.iaf = iaf
        self.log_sigma = 0.0
        self.num_dims = 784

    def parameters(self):
        return self.model.parameters()

    def train_loss(self, x):
        return self.model({"data": x}).loss / self.num_dims

    def _posterior(self, x):
        """``z`` from ``q(z|x)`` and ``log q(z|x)``, ``(B,)``."""
        out = self.model.encoder(x)
        mu, log_var = out.embedding, out.log_covariance
        eps = torch.randn_like(mu)
        z = mu + eps * torch.exp(0.5 * log_var)
        log_q = -0.5 * (eps.pow(2) + log_var + LOG_2PI).sum(1)
        if self.iaf:
            flow = self.model.iaf_flow.inverse(z)
            z, log_q = flow.out, log_q - flow.log_abs_det_jac
        return z, log_q

    def _log_weights(self, x):
        z, log_q = self._posterior(x)
        mean = self.model.decoder(z)["reconstruction"]
        sq = (x - mean).flatten(1).pow(2).sum(1)
        log_px = -0.5 * sq * math.exp(-2 * self.log_sigma) - self.num_dims * (self.log_sigma + 0.5 * LOG_2PI)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(1)
        return log_px + log_pz - log_q

    @torch.no_grad()
    def fit_sigma(self, batches):
        sq, n = 0.0, 0
        for x in batches:
            z, _ = self._posterior(x)
            sq += (x - self.model.decoder(z)["reconstruction"]).pow(2).sum().item()
            n += x.numel()
        self.log_sigma = 0.5 * math.log(sq / n)

    @torch.no_grad()
    def nll(self, x, num_samples, labels=None, marginal=False):
        self.model.eval()
        elbo = -self._log_weights(x)
        xs = x.repeat_interleave(num_samples, 0)
        log_w = self._log_weights(xs).view(len(x), num_samples)
        iw = -(torch.logsumexp(log_w, 1) - math.log(num_samples))
        return {"elbo": elbo, "iw": iw}

    @torch.no_grad()
    def sample(self, n, temperature=1.0, labels=None):
        z = temperature * torch.randn(n, self.model.latent_dim)  # the prior is on the flow's output z_K
        return self.model.decoder(z)["reconstruction"].clamp(0, 1)


def build(name: str):
    """The adapter of a model named in compare_peers.py."""
    if name in ("fvae", "vae", "glow", "composite"):
        return FvaeAdapter(fvae.model_config(name, "mnist"))
    if name == "normflows_glow":
        cfg = fvae.model_config("glow", "mnist")
        return NormflowsGlow(cfg.flow_levels, cfg.flow_steps[0], cfg.flow_widths[0], cfg.image_shape, cfg.model_shape)
    if name in ("pythae_vae", "pythae_vae_iaf"):
        return PythaeVAE(iaf=name.endswith("iaf"))
    raise ValueError(f"unknown model {name!r}")


def count_parameters(adapter) -> int:
    return sum(p.numel() for p in adapter.parameters() if isinstance(p, nn.Parameter) and p.requires_grad)
