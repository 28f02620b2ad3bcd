"""The prior ``q(z)`` of every model: ``N(0, I)``, or a learned one on ``F``'s top level.

``z`` flattened has ``D`` entries; the last ``d`` are the top level of ``F`` (for the VAE, its
whole latent). The split-off levels before them are already whitened by ``F``'s conditional
split priors and stay ``N(0, I)``. The top level's prior is a mixture of ``K`` diagonal
Gaussians, one set of them per class ``y`` where the model is class-conditional:

    q(z_top | y) = sum_k pi_{y,k} N(z_top; mu_{y,k}, diag(sigma_{y,k}^2)),

``K = 1`` a learned Gaussian. Without classes and with ``K = 1`` it is ``N(0, I)`` and has no
parameters. ``ar_width`` replaces the mixture by an autoregressive Gaussian over the top's
entries (:mod:`fvae.models.autoregressive`), learned with the model. A class-conditional model's
marginal is ``q(x) = sum_y q(x | y) p(y)``, with ``p(y)`` the training set's class frequencies
(:meth:`LatentPrior.set_class_frequencies`).

The top prior is learned with the rest of the model (``fit="joint"``), or fitted after training
(``fit="after"``, a two-stage prior as in Dai & Wipf 2019): the model trains against ``N(0, I)``
(in training mode the top prior is ``N(0, I)``), then :meth:`LatentPrior.fit` fits the mixture by
EM to the top latents ``z_top = F_x(u)`` of training images, which evaluation and sampling use.
``fit="refit"`` does both: the prior is learned with the model, then refitted by EM to the top
latents of the weights that evaluation and sampling use (the EMA weights, which the prior trained
beside the moving weights never saw). Every way it is a normalised density, so every bound stays
a bound.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fvae.errors import InputError
from fvae.flows.base import class_weights, soft_clamp
from fvae.models.autoregressive import AutoregressiveGaussian
from fvae.models.normal import LOG_2PI, standard_normal_log_prob

CONTEXT_BANK = 1024  # training contexts a context model keeps, to sample from without one


class LatentPrior(nn.Module):
    """``q(z | y)`` over latents of ``latent_shape`` whose last ``top_dims`` entries have the
    learned prior (module docstring). ``labels``: ``(B,)`` class indices, or ``(B, C)`` class
    weights (a soft label mixes the classes' parameters linearly), required (and only allowed)
    when ``num_classes > 0``. Component means start spread as ``N(0, I)`` draws (``K > 1``) or at
    0, scales at 1, weights equal. ``ar_width``: the top's prior autoregressive instead (one
    component, learned jointly), its net of that width."""

    def __init__(self, latent_shape: tuple[int, ...], top_dims: int, num_classes: int = 0, components: int = 1,
                 scale_bound: float = 5.0, fit: str = "joint", ar_width: int | None = None, num_context: int = 0):
        super().__init__()
        self.num_context = num_context
        self.autoregressive = AutoregressiveGaussian(top_dims, ar_width, num_classes, scale_bound) \
            if ar_width else None
        if self.autoregressive is not None and (components > 1 or fit != "joint"):
            raise InputError("an autoregressive top prior has one component and is learned with the model")
        self.latent_shape, self.top_dims = tuple(latent_shape), top_dims
        self.num_classes, self.components, self.scale_bound = num_classes, components, scale_bound
        self.fit_after = fit == "after"
        self.refitted = fit in ("after", "refit")
        self.learned = num_classes > 0 or components > 1 or self.refitted or self.autoregressive is not None
        if self.learned and self.autoregressive is None:
            sets = max(1, num_classes)
            spread = components > 1 and not self.fit_after
            means = torch.randn(1, components, top_dims).expand(sets, -1, -1).clone() if spread \
                else torch.zeros(sets, components, top_dims)
            self.means = nn.Parameter(means, requires_grad=not self.fit_after)
            self.log_scales = nn.Parameter(torch.zeros(sets, components, top_dims), requires_grad=not self.fit_after)
            self.logits = nn.Parameter(torch.zeros(sets, components), requires_grad=not self.fit_after)
        if num_classes and not num_context:
            self.register_buffer("log_class_prior", torch.full((num_classes,), -math.log(num_classes)))
        if num_context:  # contexts seen in training, drawn from where sampling is given none
            self.register_buffer("context_bank", torch.zeros(CONTEXT_BANK, num_context))

    # --- classes -----------------------------------------------------------------------------
    def check_labels(self, labels: torch.Tensor | None, batch: int) -> None:
        """Labels (or contexts) of the right kind for this prior, or a clear error."""
        if self.num_context:
            if labels is None or labels.shape != (batch, self.num_context) or not labels.is_floating_point():
                got = "none" if labels is None else f"{tuple(labels.shape)} {labels.dtype}"
                raise InputError(f"this model takes a context (model.num_context={self.num_context}): pass a "
                                 f"({batch}, {self.num_context}) float tensor, got {got}")
            if labels.device.type != "meta" and not torch.isfinite(labels).all():
                raise InputError("contexts must be finite")
            return
        if not self.num_classes:
            if labels is not None:
                raise InputError("labels were given to a model that is not class-conditional (model.num_classes=0)")
            return
        if labels is None:
            raise InputError(f"this model is class-conditional (model.num_classes={self.num_classes}): "
                             f"pass labels, a (B,) tensor of class indices")
        if labels.dim() == 2 and labels.shape == (batch, self.num_classes) and labels.is_floating_point():
            if (labels < 0).any() or not torch.allclose(labels.sum(1), torch.ones_like(labels[:, 0]), atol=1e-4):
                raise InputError("soft labels must be rows of non-negative class weights that sum to 1")
            return
        if labels.shape != (batch,) or labels.dtype not in (torch.int64, torch.int32):
            raise InputError(f"labels must be a ({batch},) tensor of integer class indices (or ({batch}, "
                             f"{self.num_classes}) class weights), got {tuple(labels.shape)} {labels.dtype}")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise InputError(f"labels must lie in 0..{self.num_classes - 1}, got {int(labels.min())}.."
                             f"{int(labels.max())} (an unlabelled dataset gives -1)")

    def conditions(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Checked labels (:meth:`check_labels`) as every conditional table takes them: class
        indices or weights as given; a context ``c`` ``(B, K)`` as ``[1, c]`` ``(B, K + 1)``, so
        that each table is affine in it."""
        self.check_labels(labels, batch)
        if self.num_context:
            return torch.cat([labels.new_ones(batch, 1), labels], 1)
        return labels

    @torch.no_grad()
    def set_contexts(self, contexts: torch.Tensor) -> None:
        """Keep ``CONTEXT_BANK`` of the training set's contexts ``(N, K)`` (evenly spaced through
        them), for :meth:`draw_labels`."""
        index = torch.linspace(0, len(contexts) - 1, CONTEXT_BANK).round().long()
        self.context_bank.copy_(contexts[index].to(self.context_bank))

    @torch.no_grad()
    def set_class_frequencies(self, counts: torch.Tensor) -> None:
        """``p(y)`` from the training set's class counts ``(num_classes,)``."""
        counts = counts.double()
        self.log_class_prior.copy_((counts / counts.sum()).log().to(self.log_class_prior))

    def draw_labels(self, num: int, device) -> torch.Tensor:
        """``num`` labels drawn from ``p(y)``; a context model's, ``num`` contexts of training images."""
        if self.num_context:
            return self.context_bank[torch.randint(CONTEXT_BANK, (num,))].to(device)
        return torch.multinomial(self.log_class_prior.exp(), num, replacement=True).to(device)

    # --- the density and sampling ----------------------------------------------------------
    def _top(self, labels: torch.Tensor | None, batch: int):
        """Per-example means, log-scales ``(B, K, d)`` and log-weights ``(B, K)``."""
        if labels is None:
            expand = (batch, -1, -1)
            return (self.means.expand(*expand), soft_clamp(self.log_scales, self.scale_bound).expand(*expand),
                    torch.log_softmax(self.logits, dim=1).expand(batch, -1))
        w = class_weights(labels, self.num_classes, self.means.dtype)
        return (torch.einsum("bc,ckd->bkd", w, self.means),
                soft_clamp(torch.einsum("bc,ckd->bkd", w, self.log_scales), self.scale_bound),
                torch.log_softmax(w @ self.logits, dim=1))

    def log_prob(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log q(z | y)``, ``(B, *latent_shape) -> (B,)`` (``N(0, I)`` while a prior fitted after
        training is in training mode)."""
        if not self.learned or (self.fit_after and self.training):
            return standard_normal_log_prob(z)
        flat = z.flatten(1)
        rest, top = flat[:, :-self.top_dims], flat[:, -self.top_dims:]
        if self.autoregressive is not None:
            return standard_normal_log_prob(rest) + self.autoregressive.log_prob(top, labels)
        mean, log_scale, log_weight = self._top(labels, len(z))
        eps = (top[:, None] - mean) * torch.exp(-log_scale)
        per_component = -0.5 * (eps.pow(2) + LOG_2PI).sum(2) - log_scale.sum(2)
        return standard_normal_log_prob(rest) + torch.logsumexp(log_weight + per_component, dim=1)

    def sample(self, num: int, temperature: float = 1.0, labels: torch.Tensor | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """``z ~ q(z | y)`` with every standard deviation times ``temperature``: ``(num, *latent_shape)``."""
        dtype = next(self.parameters()).dtype if self.learned else torch.get_default_dtype()
        z = temperature * torch.randn(num, math.prod(self.latent_shape), device=device, dtype=dtype)
        if self.autoregressive is not None:
            z[:, -self.top_dims:] = self.autoregressive.invert(z[:, -self.top_dims:], labels)
        elif self.learned:
            mean, log_scale, log_weight = self._top(labels, num)
            k = torch.multinomial(log_weight.exp(), 1).squeeze(1)
            rows = torch.arange(num, device=device)
            z[:, -self.top_dims:] = mean[rows, k] + torch.exp(log_scale[rows, k]) * z[:, -self.top_dims:]
        return z.view(num, *self.latent_shape)

    @torch.no_grad()
    def recolor(self, z: torch.Tensor, labels: torch.Tensor, to_labels: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
        """``z`` ``(B, *latent_shape)`` of classes ``labels`` moved to the same place in the priors of
        ``to_labels``: the top's noise ``eps = (z - mu_{y,k}) / s_{y,k}`` (``k`` the component most
        responsible for ``z``; the autoregressive prior's ``eps`` entry by entry) redrawn as
        ``mu_{y',k} + s_{y',k} T eps``. The split-off entries are F's whitened noise already: kept,
        times ``T`` (``temperature`` below 1 draws the result towards the target class's mode)."""
        flat = z.flatten(1) * temperature
        if not self.learned:
            return flat.view_as(z)
        top = flat[:, -self.top_dims:] / temperature
        if self.autoregressive is not None:
            eps = self.autoregressive.whiten(top, labels)
            flat[:, -self.top_dims:] = self.autoregressive.invert(temperature * eps, to_labels)
            return flat.view_as(z)
        mean, log_scale, log_weight = self._top(labels, len(z))
        eps = (top[:, None] - mean) * torch.exp(-log_scale)
        k = (log_weight - 0.5 * eps.pow(2).sum(2) - log_scale.sum(2)).argmax(1)
        rows = torch.arange(len(z), device=z.device)
        new_mean, new_log_scale, _ = self._top(to_labels, len(z))
        flat[:, -self.top_dims:] = new_mean[rows, k] + torch.exp(new_log_scale[rows, k]) * temperature * eps[rows, k]
        return flat.view_as(z)

    @torch.no_grad()
    def fit(self, top: torch.Tensor, labels: torch.Tensor | None = None, iterations: int = 50,
            min_scale: float = 1e-2) -> None:
        """EM for the mixture of each class (or the one mixture) on top latents ``top`` ``(N, d)``
        of training images (``labels`` ``(N,)`` their classes): the means start at ``K`` of the
        latents, the scales at their spread; each iteration sets, with responsibilities
        ``r_nk = pi_k N(z_n; mu_k, s_k^2) / sum_j pi_j N(z_n; mu_j, s_j^2)``,
        ``pi_k = mean_n r_nk``, ``mu_k = sum_n r_nk z_n / sum_n r_nk`` and
        ``s_k^2 = sum_n r_nk (z_n - mu_k)^2 / sum_n r_nk`` (at least ``min_scale^2``)."""
        top = top.double()
        generator = torch.Generator().manual_seed(0)
        for s in range(max(1, self.num_classes)):
            z = top if labels is None else top[labels == s]
            if len(z) < self.components:
                continue  # too few latents of this class: its prior stays as it is
            mean = z[torch.randperm(len(z), generator=generator)[:self.components]].clone()
            var = z.var(0, unbiased=False).clamp(min=min_scale ** 2).expand(self.components, -1).clone()
            log_weight = torch.full((self.components,), -math.log(self.components), dtype=torch.float64)
            for _ in range(iterations):
                log_r = log_weight - 0.5 * (((z[:, None] - mean) ** 2 / var) + var.log() + LOG_2PI).sum(2)
                r = torch.softmax(log_r, dim=1)
                count = r.sum(0) + 1e-9
                mean = (r.T @ z) / count[:, None]
                var = ((r.T @ z.pow(2)) / count[:, None] - mean.pow(2)).clamp(min=min_scale ** 2)
                log_weight = (count / count.sum()).log()
            log_scale = 0.5 * var.log()
            bound = self.scale_bound * (1 - 1e-6)
            self.means[s].copy_(mean.to(self.means))
            self.log_scales[s].copy_((self.scale_bound * torch.atanh(log_scale.clamp(-bound, bound)
                                                                      / self.scale_bound)).to(self.log_scales))
            self.logits[s].copy_(log_weight.to(self.logits))

    def gaussian_kl(self, mu: torch.Tensor, log_sigma: torch.Tensor, labels: torch.Tensor | None = None
                    ) -> torch.Tensor | None:
        """``KL(N(mu, sigma^2) || q(z | y))`` per example for a Gaussian posterior over the whole
        latent ``(B, d)`` (the VAE), where it has a closed form (``K = 1``), else None:

            1/2 sum [ (sigma^2 + (mu - m)^2) / s^2 - 1 - 2 log sigma + 2 log s ].
        """
        if self.components > 1 or self.autoregressive is not None:
            return None
        if not self.learned:
            m, log_s = torch.zeros_like(mu), torch.zeros_like(mu)
        else:
            mean, log_scale, _ = self._top(labels, len(mu))
            m, log_s = mean[:, 0], log_scale[:, 0]
        ratio = torch.exp(2 * (log_sigma - log_s)) + (mu - m).pow(2) * torch.exp(-2 * log_s)
        return 0.5 * (ratio - 1 - 2 * log_sigma + 2 * log_s).sum(1)
