"""The general loss of f-VAEs (the paper's equation A), shared by every model.

With ``u ~ N(0, I)``, ``z = F_x(u)``, prior ``q(z) = N(0, I)`` and decoder ``q(x|z)``:

    L(x) = E_u [ -log q(x | F_x(u)) - log q(F_x(u)) - log|det dF_x(u)/du| + log q(u) ]

an upper bound on ``-log q(x)``. A subclass says what ``F_x`` and ``q(x|z)`` are;
this class turns them into the loss, the importance-weighted bound, sampling,
encoding and decoding. The prior ``q(z)`` is :class:`~fvae.models.priors.LatentPrior`:
``N(0, I)``, or learned on ``F``'s top level (a mixture; per class for a class-conditional
model, whose every method then takes the labels ``y`` and bounds ``-log q(x | y)``). Images
come in and go out in ``[0, 1)``; inside, the model works on ``x' = a (x - 1/2)`` and every
nats figure includes that map's Jacobian.

With ``pad_to`` the model works on images padded to ``pad_to x pad_to`` (``D'`` pixels) whose
extra pixels are the background value ``k0``, dequantized like the rest. Its figures are bounds
for the ``D`` real pixels: ``P_D(k) >= P_D'(k, pad = k0)``, so the padded model's bound on
``-log P_D'(k, k0)``, ``nats' + D' ln 256``, bounds ``-log P_D(k)`` too; it is reported as
``nats = nats' + (D' - D) ln 256``, on the scale of ``D`` dequantized pixels, and
``bpd = (nats + D ln 256) / (D ln 2)`` as for any model.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from fvae.config import ModelConfig
from fvae.errors import InputError
from fvae.fp32 import to_fp32
from fvae.models.hub import HubMixin
from fvae.models.normal import LOG_2PI, standard_normal_log_prob
from fvae.models.priors import LatentPrior


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """``log N(x; mean, sigma^2 I)`` with one scalar ``sigma``, summed per example: ``(B,)``.

    ``= -||x - mean||^2 / (2 sigma^2) - D log sigma - (D/2) log 2 pi``.
    """
    d = x[0].numel()
    sq = (x - mean).flatten(1).pow(2).sum(1)
    return -0.5 * sq * torch.exp(-2 * log_sigma) - d * log_sigma - 0.5 * d * LOG_2PI


def log_normal_interval(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``log(Phi(upper) - Phi(lower))`` for standardised bounds ``lower < upper``, stably.

    Intervals in the upper tail are mirrored (``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)``) so
    that both ``log Phi`` terms stay away from 0, and ``log(-expm1(.))`` keeps their difference
    exact. Intervals narrower than ``1e-3`` standard deviations, where that difference falls
    below float precision, use the midpoint rule ``log phi((a + b) / 2) + log(b - a)``
    (relative error below ``1e-7``).
    """
    flip = (lower + upper) > 0
    lo, hi = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    exact = log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-30)))
    width = (hi - lo).clamp(min=1e-30)
    midpoint = -0.5 * (0.5 * (lo + hi)).pow(2) - 0.5 * LOG_2PI + torch.log(width)
    return torch.where(width < 1e-3, midpoint, exact)


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor,
                                  data_scale: float, bins: int = 256) -> torch.Tensor:
    """``log q(x|z)`` of a Gaussian integrated over the 8-bit bin of each pixel, as a density, ``(B,)``.

    Model-space ``x = a (k + noise) / 256 - a/2`` lies in the bin of pixel ``k``, of width
    ``a / 256``; ``P(k) = Phi((upper_k - mean) / sigma) - Phi((lower_k - mean) / sigma)`` with
    the outer bins open-ended (``lower_0 = -inf``, ``upper_255 = inf``), so the ``P(k)`` sum to
    1. Returned as the piecewise-constant density ``log P(k) + D log(256 / a)``: with the model's
    ``-D log a`` the loss in nats becomes ``-log P(k) - D ln 256`` plus the rest of eq. A, and
    ``bpd = (nats + D ln 256) / (D ln 2)`` is the bound on the discrete pixels.
    """
    width = data_scale / bins
    k = torch.floor((x + 0.5 * data_scale) / width).clamp(0, bins - 1)
    lower = k * width - 0.5 * data_scale
    inv_sigma = torch.exp(-log_sigma)
    # the open ends: far enough to make Phi 0 or 1 in any precision, finite so gradients stay finite
    big = torch.finfo(torch.float32).max ** 0.25
    a = torch.where(k == 0, -big, (lower - mean) * inv_sigma)
    b = torch.where(k == bins - 1, big, (lower + width - mean) * inv_sigma)
    log_p = log_normal_interval(a, b).flatten(1).sum(1)
    return log_p + x[0].numel() * math.log(bins / data_scale)


def centre_slices(image_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The rows and columns of an image of ``image_shape`` centred in one of ``model_shape``."""
    (_, h, w), (_, hp, wp) = image_shape, model_shape
    return slice((hp - h) // 2, (hp - h) // 2 + h), slice((wp - w) // 2, (wp - w) // 2 + w)


def pad_images(x: torch.Tensor, model_shape: tuple[int, ...], pad_value: int = 0) -> torch.Tensor:
    """Images ``(B, C, H, W)`` in ``[0, 1)`` centred in ``model_shape``, the other pixels the 8-bit
    value ``pad_value`` dequantized: ``(pad_value + U[0, 1)) / 256``."""
    if tuple(x.shape[1:]) == tuple(model_shape):
        return x
    padded = (pad_value + torch.rand(x.shape[0], *model_shape, device=x.device, dtype=x.dtype)) / 256
    padded[(..., *centre_slices(x.shape[1:], model_shape))] = x
    return padded


def padding_log_jacobian(image_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> float:
    """``-(D' - D) ln 256``: the padding pixels' bins as probabilities (module docstring)."""
    return -(math.prod(model_shape) - math.prod(image_shape)) * math.log(256)


class Posterior(NamedTuple):
    """A draw ``z = F_x(u)`` of the posterior.

    ``logdet``: ``log|det dF_x(u)/du|``, ``(B,)``. ``decoder_input``: what the decoder
    needs (``F^-1(z)``, kept from the forward pass rather than recomputed).
    ``kl``: the closed-form ``KL(p(z|x) || q(z))`` where the model has one, else None.
    """

    z: torch.Tensor
    logdet: torch.Tensor
    decoder_input: torch.Tensor
    kl: torch.Tensor | None = None


class LatentFlowModel(nn.Module, HubMixin):
    """Base of every model: eq. A, its importance-weighted bound, sampling and coding; saved
    and loaded as a Hugging Face folder by ``save_pretrained`` / ``fvae.from_pretrained``.

    ``labels``, where a method takes them: ``(B,)`` class indices, required by class-conditional
    models (``config.num_classes > 0``) and refused by the others."""

    latent_shape: tuple[int, ...]
    prior: LatentPrior

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.image_shape = tuple(config.image_shape)
        self.model_shape = tuple(config.model_shape)
        self.num_dims = math.prod(self.image_shape)
        self.num_classes = config.num_classes
        self.num_context = config.num_context
        self.data_scale = float(config.data_scale)
        self.crop = centre_slices(self.image_shape, self.model_shape)

    @property
    def conditional(self) -> bool:
        """Whether every method takes labels: a class (``num_classes``) or a context (``num_context``)."""
        return bool(self.num_classes or self.num_context)

    def build_prior(self, top_dims: int) -> None:
        """The prior over ``latent_shape`` (set it first), learned on its last ``top_dims`` entries."""
        self.prior = LatentPrior(self.latent_shape, top_dims, self.config.num_conditions, self.config.prior_components,
                                 fit=self.config.prior_fit, ar_width=self.config.prior_ar_width,
                                 num_context=self.config.num_context)

    # --- what a model defines -------------------------------------------------------------
    def posterior(self, x: torch.Tensor, u: torch.Tensor, labels: torch.Tensor | None = None) -> Posterior:
        """``z = F_x(u)`` for model-space images ``x``: ``(B, C, H, W)``, ``u``: ``(B, *latent_shape)``."""
        raise NotImplementedError

    def decoder_log_prob(self, x: torch.Tensor, decoder_input: torch.Tensor,
                         labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log q(x | z)`` (``log q(x | z, y)`` with a class-conditional decoder), ``(B,)``, for model-space ``x``."""
        raise NotImplementedError

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean for latents ``z``: model-space images ``(B, *model_shape)``."""
        raise NotImplementedError

    def posterior_mode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``F_x(0)``: the latent of model-space images ``x`` used for reconstruction."""
        return self.posterior(x, x.new_zeros(x.shape[0], *self.latent_shape), labels).z

    def gaussian_decoder_log_prob(self, x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor
                                  ) -> torch.Tensor:
        """``log N(x; mean, sigma^2 I)`` as the paper has it (``likelihood="gaussian"``), or that
        Gaussian integrated over each pixel's 8-bit bin (``likelihood="discretized"``), ``(B,)``.
        Computed in fp32 (or fp64) whatever precision the decoder ran in."""
        mean = to_fp32(mean)
        if self.config.likelihood == "discretized":
            return discretized_gaussian_log_prob(x, mean, log_sigma, self.data_scale)
        return gaussian_log_prob(x, mean, log_sigma)

    # --- data space ----------------------------------------------------------------------
    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """``x' = a (pad(x) - 1/2)``, ``(B, *image_shape) -> (B, *model_shape)``; checks the shape."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise InputError(f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(x.shape)}")
        return self.data_scale * (self.pad(x) - 0.5)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1)`` centred in ``model_shape``, the rest ``(k0 + U[0, 1)) / 256``."""
        return pad_images(x, self.model_shape, self.config.pad_value)

    def to_image_space(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space images back to ``[0, 1]``, cropped to ``image_shape``."""
        return (x[(..., *self.crop)] / self.data_scale + 0.5).clamp(0.0, 1.0)

    @property
    def log_jacobian(self) -> float:
        """``log p(x) - log p(x')``: ``D' log a`` of the scaling, less ``(D' - D) ln 256`` for the
        ``D' - D`` padding pixels, whose bins become probabilities (module docstring)."""
        return (math.prod(self.model_shape) * math.log(self.data_scale)
                + padding_log_jacobian(self.image_shape, self.model_shape))

    # --- the loss ------------------------------------------------------------------------
    def log_weights(self, x: torch.Tensor, u: torch.Tensor, labels: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, Posterior]:
        """``(-log q(x|z), log q(u) - logdet - log q(z|y), posterior)`` on model space."""
        post = self.posterior(x, u, labels)
        reconstruction = -self.decoder_log_prob(x, post.decoder_input, labels)
        kl = standard_normal_log_prob(u) - post.logdet - self.prior.log_prob(post.z, labels)
        return reconstruction, kl, post

    def loss_terms(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The parts of the negative ELBO, each ``(B,)`` in nats, for images ``x`` in ``[0, 1)``.

        ``reconstruction = -log q(x|z)``; ``kl`` the rest of eq. A (closed form where the
        model has it, else its one-sample estimate); ``loss = reconstruction + kl - D log a``.
        """
        xm = self.to_model_space(x)
        labels = self.prior.conditions(labels, len(x))
        u = torch.randn(x.shape[0], *self.latent_shape, device=x.device, dtype=x.dtype)
        reconstruction, kl, post = self.log_weights(xm, u, labels)
        if post.kl is not None:
            kl = post.kl
        return {"loss": reconstruction + kl - self.log_jacobian, "reconstruction": reconstruction, "kl": kl}

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """:meth:`loss_terms`, so that wrappers such as DDP see the loss as the forward pass."""
        return self.loss_terms(x, labels)

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example negative ELBO in nats, ``(B,)``: an upper bound on ``-log p(x)`` (``-log p(x|y)``)."""
        return self.loss_terms(x, labels)["loss"]

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, num_samples: int = 100, chunk_size: int = 1024,
                       labels: torch.Tensor | None = None) -> torch.Tensor:
        """Importance-weighted lower bound on ``log p(x)`` (``log p(x|y)``) in nats, ``(B,)``:

            log (1/K) sum_k q(x|z_k) q(z_k) / p(z_k|x),   log p(z|x) = log q(u) - log|det dF_x/du|.

        Samples are drawn ``chunk_size`` (example, sample) pairs at a time, so large ``K``
        fits in memory.
        """
        xm = self.to_model_space(x)
        labels = self.prior.conditions(labels, len(x))
        per_chunk = max(1, chunk_size // x.shape[0])
        log_ws = []
        for start in range(0, num_samples, per_chunk):
            k = min(per_chunk, num_samples - start)
            xk = xm.repeat_interleave(k, dim=0)
            yk = labels.repeat_interleave(k, dim=0) if labels is not None else None
            u = torch.randn(xk.shape[0], *self.latent_shape, device=x.device, dtype=x.dtype)
            reconstruction, kl, _ = self.log_weights(xk, u, yk)
            log_ws.append((-reconstruction - kl).view(x.shape[0], k))
        log_w = torch.cat(log_ws, dim=1)
        return torch.logsumexp(log_w, dim=1) - math.log(num_samples) + self.log_jacobian

    @torch.no_grad()
    def marginal_log_likelihood(self, x: torch.Tensor, num_samples: int = 100, chunk_size: int = 1024
                                ) -> torch.Tensor:
        """A class-conditional model's bound on the marginal ``log p(x) = log sum_y p(x|y) p(y)``,
        ``(B,)``: the IW bound of each class, weighted by the training set's ``p(y)``. (Each is an
        unbiased estimate's logarithm, so the log of their weighted sum is a lower bound too.)"""
        if not self.num_classes:
            raise InputError("the marginal over classes needs a class-conditional model (model.num_classes > 0)")
        per_class = [self.log_likelihood(x, num_samples, chunk_size, self._all(x, y)) for y in range(self.num_classes)]
        return torch.logsumexp(torch.stack(per_class, 1) + self.prior.log_class_prior, dim=1)

    @staticmethod
    def _all(x: torch.Tensor, label: int) -> torch.Tensor:
        return torch.full((len(x),), label, dtype=torch.long, device=x.device)

    @torch.no_grad()
    def top_latents(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The top level of ``z = F_x(u)``, ``u ~ N(0, I)``, for images ``x`` in ``[0, 1)``: ``(B, d)``,
        what a prior fitted after training is fitted to."""
        xm = self.to_model_space(x)
        u = torch.randn(x.shape[0], *self.latent_shape, device=x.device, dtype=x.dtype)
        return self.posterior(xm, u, labels).z.flatten(1)[:, -self.prior.top_dims:]

    # --- sampling and coding ---------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num: int, temperature: float = 1.0, labels: torch.Tensor | None = None,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """``z ~ q(z|y)`` at ``temperature`` (every standard deviation times ``T``), ``x`` the decoder's
        mean: ``(num, C, H, W)`` in ``[0, 1]``. A class-conditional model draws ``labels`` from the
        training set's ``p(y)`` where none are given; a context model (``num_context = K``) takes
        ``context`` ``(num, K)`` (the same as ``labels``), else draws training images' contexts."""
        labels = context if context is not None else labels
        device = next(self.parameters()).device
        if self.conditional and labels is None:
            labels = self.prior.draw_labels(num, device)
        labels = self.prior.conditions(labels, num)
        z = self.prior.sample(num, temperature, labels, device)
        return self.to_image_space(to_fp32(self.generate(z, labels)))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in ``[0, 1)`` to latents ``z = F_x(0)``, ``(B, *latent_shape)``."""
        labels = self.prior.conditions(labels, len(x))
        return self.posterior_mode(self.to_model_space(x), labels)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents to images in ``[0, 1]``."""
        labels = self.prior.conditions(labels, len(z))
        return self.to_image_space(to_fp32(self.generate(z, labels)))

    @torch.no_grad()
    def classify(self, x: torch.Tensor, samples: int = 4) -> torch.Tensor:
        """The most probable class of each image ``(B, C, H, W)`` in ``[0, 1)`` by Bayes' rule on the
        model's own bound: ``argmax_y  log p(y) - mean_k L_k(x | y)``, ``samples`` ELBO draws a class.
        Returns ``(B,)`` class indices."""
        if not self.num_classes:
            raise InputError("classify needs a class-conditional model (model.num_classes > 0)")
        scores = []
        for y in range(self.num_classes):
            labels = torch.full((len(x),), y, dtype=torch.long, device=x.device)
            nats = torch.stack([self.loss(x, labels) for _ in range(samples)]).mean(0)
            scores.append(self.prior.log_class_prior[y] - nats)
        return torch.stack(scores, 1).argmax(1)

    @torch.no_grad()
    def transfer(self, x: torch.Tensor, labels: torch.Tensor, to_labels: torch.Tensor | list[int],
                 temperature: float = 1.0) -> torch.Tensor:
        """Each image under each target class (a class-conditional model): ``x`` ``(B, C, H, W)`` in
        ``[0, 1)`` of classes ``labels`` ``(B,)``, encoded under its own class, ``z = F_x(0)``; its
        place in its class's prior kept (:meth:`LatentPrior.recolor`, at ``temperature``) and decoded
        under each class of ``to_labels`` ``(T,)``. Returns ``(B, T, C, H, W)`` in ``[0, 1]``: the
        same hand, another class."""
        if not self.num_classes:
            raise InputError("transfer needs a class-conditional model (model.num_classes > 0)")
        z = self.encode(x, labels)
        targets = torch.as_tensor(to_labels, device=x.device).long().flatten()
        self.prior.check_labels(targets, len(targets))
        out = []
        for target in targets:
            to = torch.full_like(labels, int(target))
            out.append(self.decode(self.prior.recolor(z, labels, to, temperature), to))
        return torch.stack(out, 1)

    @torch.no_grad()
    def latent_direction(self, a: torch.Tensor, b: torch.Tensor, labels_a: torch.Tensor | None = None,
                         labels_b: torch.Tensor | None = None) -> torch.Tensor:
        """The direction from image set ``a`` to image set ``b`` in latent space: the mean of their
        latents ``z = F_x(0)``, ``b``'s less ``a``'s, ``(*latent_shape)``."""
        return self.encode(b, labels_b).mean(0) - self.encode(a, labels_a).mean(0)

    @torch.no_grad()
    def edit(self, x: torch.Tensor, direction: torch.Tensor, strengths: torch.Tensor | list[float],
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images walked along a latent ``direction`` (:meth:`latent_direction`): ``decode(z + s d)``
        for ``z`` the latents of ``x`` ``(B, C, H, W)`` and each strength ``s`` (0 reconstructs).
        Returns ``(B, S, C, H, W)`` in ``[0, 1]``."""
        if tuple(direction.shape) != tuple(self.latent_shape):
            raise InputError(f"a latent direction has the latents' shape {tuple(self.latent_shape)}, "
                             f"got {tuple(direction.shape)}")
        z = self.encode(x, labels)
        return torch.stack([self.decode(z + float(s) * direction.to(z), labels) for s in strengths], 1)

    def scales(self) -> dict[str, torch.Tensor]:
        """The model's trained scalar scales (``sigma1``, ``sigma2``) for logging."""
        return {}
