"""Likelihood conversions: nats on ``[0, 1)``-scaled images to bits/dim on 8-bit images.

For pixels ``k in {0..255}`` and ``x = (k + noise) / 256`` (uniform dequantization),
``-log P(k) <= E[-log p(x)] + D ln 256``, so ``bpd = (nats + D ln 256) / (D ln 2)``.
"""
from __future__ import annotations

import math

import torch


def bits_per_dim(nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Negative log-likelihood (bound) in nats on ``[0, 1)`` data -> bits/dim on 8-bit data."""
    return (nats + num_dims * math.log(256)) / (num_dims * math.log(2))


def bits_per_dim_summary(name: str, nats: torch.Tensor, num_dims: int) -> dict[str, float]:
    """``{name}_bpd``, ``{name}_bpd_median`` and ``{name}_bpd_max``: the mean, the median and the
    largest of per-image nats ``(N,)``, each in bits/dim (a mean far above its median comes from a few
    images the model gives almost no probability)."""
    nats = nats.double()
    return {f"{name}_bpd": bits_per_dim(nats.mean().item(), num_dims),
            f"{name}_bpd_median": bits_per_dim(nats.median().item(), num_dims),
            f"{name}_bpd_max": bits_per_dim(nats.max().item(), num_dims)}


def psnr(mse: torch.Tensor | float, peak: float = 1.0) -> torch.Tensor | float:
    """Peak signal-to-noise ratio in dB of a mean squared error on images in ``[0, peak]``."""
    if isinstance(mse, torch.Tensor):
        return 10 * torch.log10(peak ** 2 / mse)
    return 10 * math.log10(peak ** 2 / mse)


def auroc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """The area under the ROC curve of a score that should be higher for ``positives``: the
    probability that a random positive scores above a random negative, ties counting half
    (the Mann-Whitney statistic), from the ranks of both sets together."""
    scores = torch.cat([negatives, positives]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores[order][1:][scores[order][1:] == scores[order][:-1]].unique():  # ties: their mean rank
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n, m = len(negatives), len(positives)
    return ((ranks[n:].sum() - m * (m + 1) / 2) / (n * m)).item()
