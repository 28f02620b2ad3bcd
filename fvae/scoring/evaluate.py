"""Evaluation on a test split: bits/dim from the ELBO, the importance-weighted bound and (for
Glow) the exact density; reconstruction error; the sample score (:mod:`fvae.scoring.score`)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from fvae.data import dequantize
from fvae.data.batches import readable_batches
from fvae.models import LatentFlowModel
from fvae.scoring.metrics import bits_per_dim, bits_per_dim_summary, psnr
from fvae.scoring.score import SampleScorer

# the bounds an evaluation can give, tightest first: what an image's bits/dim is read from
BOUNDS = ("marginal_exact", "marginal_iw", "exact", "iw", "elbo")


@torch.no_grad()
def per_image_nats(model: LatentFlowModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   num_samples: int = 100, chunk_size: int = 4096, progress: bool = False,
                   marginal_samples: int | None = None) -> tuple[dict[str, torch.Tensor], float, int]:
    """Each bound of each image of ``batches`` (``(images in [0, 1), labels)``) in nats, ``(N,)``
    float64 by name (:data:`BOUNDS`, those the model has: see :func:`likelihood_bits_per_dim`), the
    summed squared reconstruction error per pixel mean, and the number of images."""
    model.eval()
    nats: dict[str, list[torch.Tensor]] = {key: [] for key in BOUNDS}
    se, count = 0.0, 0
    exact = getattr(model, "exact_log_likelihood", None)
    marginal_samples = num_samples if marginal_samples is None else marginal_samples
    for x, labels in tqdm(batches, desc="eval", disable=not progress):
        y = labels.to(x.device) if model.conditional and labels is not None else None
        nats["elbo"].append(model.loss(x, y))
        if num_samples:
            nats["iw"].append(-model.log_likelihood(x, num_samples, chunk_size, y))
        if exact is not None:
            nats["exact"].append(-exact(x, y))
        if model.num_classes and exact is not None:
            nats["marginal_exact"].append(-model.exact_marginal_log_likelihood(x))
        elif model.num_classes and marginal_samples:
            nats["marginal_iw"].append(-model.marginal_log_likelihood(x, marginal_samples, chunk_size))
        se += (model.decode(model.encode(x, y), y) - x).pow(2).flatten(1).mean(1).sum().item()
        count += len(x)
    return {k: torch.cat(v).double().cpu() for k, v in nats.items() if v}, se, count


def likelihood_bits_per_dim(model: LatentFlowModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                            num_samples: int = 100, chunk_size: int = 4096, progress: bool = False,
                            marginal_samples: int | None = None) -> dict[str, float]:
    """Mean bits/dim over ``batches`` of ``(images in [0, 1), labels)``: ``elbo_bpd`` (negative
    ELBO), ``iw_bpd`` (IW bound with ``num_samples`` samples), ``exact_bpd`` (models with an exact
    density), plus the reconstruction ``mse`` and ``psnr`` of ``decode(encode(x))``.

    A class-conditional model's figures are those of ``-log p(x|y)`` at each image's own label;
    ``marginal_iw_bpd`` (``marginal_exact_bpd``) bounds the marginal ``-log sum_y p(x|y) p(y)``
    (with ``marginal_samples`` samples a class, default ``num_samples``), on the scale of an
    unconditional model's.

    Beside each mean, the median and the largest of the images' own figures (``exact_bpd_median``,
    ``exact_bpd_max``, ...): a mean far above its median comes from a few images the model gives
    almost no probability (docs/results-v0.3.md, the 30-minute table)."""
    nats, se, count = per_image_nats(model, batches, num_samples, chunk_size, progress, marginal_samples)
    result = {}
    for key, values in nats.items():
        result |= bits_per_dim_summary(key, values, model.num_dims)
    mse = se / count
    result.update(recon_mse=mse, psnr=psnr(mse) if mse > 0 else math.inf, num_images=count)
    return result


def tightest(nats: dict[str, torch.Tensor]) -> str:
    """The name of the tightest bound in ``nats`` (:data:`BOUNDS` order)."""
    return next(key for key in BOUNDS if key in nats)


def per_image_bits_per_dim(model: LatentFlowModel, dataset: Dataset, num_samples: int = 10, batch_size: int = 64,
                           max_images: int | None = None, seed: int = 0, progress: bool = False
                           ) -> tuple[str, torch.Tensor]:
    """Each image's tightest bound (:func:`tightest`; the marginal one for a class-conditional
    model) in bits/dim, ``(N,)``, on ``max_images`` images of ``dataset`` (all when None) drawn and
    dequantized from ``seed``, and that bound's name: the scores of an out-of-distribution test."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batches = dequantized_batches(dataset, batch_size, max_images, seed, device)
        nats, _, _ = per_image_nats(model, batches, num_samples, progress=progress)
    bound = tightest(nats)
    return bound, bits_per_dim(nats[bound], model.num_dims)


def dequantized_batches(dataset: Dataset, batch_size: int, max_images: int | None, seed: int, device):
    """``(images, labels)`` of ``max_images`` images of ``dataset`` (all when None), the images
    dequantized with fixed noise.

    The images are a uniform draw in an order fixed by ``seed``, not the first rows: some
    test sets (the embedded digits) are sorted by class.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g)[:max_images].tolist()
    for images, labels in readable_batches(dataset, order, batch_size):
        yield dequantize(images, g).to(device), labels


def balanced_labels(model: LatentFlowModel, num: int) -> torch.Tensor | None:
    """``0, 1, ..., C-1, 0, 1, ...`` (``num`` of them) for a class-conditional model of ``C``
    classes, so that every class is drawn as often; None for an unconditional model."""
    return torch.arange(num) % model.num_classes if model.num_classes else None


@torch.no_grad()
def draw_samples(model: LatentFlowModel, num: int, temperature: float = 1.0, batch_size: int = 250,
                 seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """``num`` samples ``(num, C, H, W)`` in ``[0, 1]`` on the CPU, from a fixed seed; a
    class-conditional model draws each for its entry of ``labels`` (default :func:`balanced_labels`)."""
    labels = balanced_labels(model, num) if labels is None else labels
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([model.sample(min(batch_size, num - i), temperature,
                                       None if labels is None else labels[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, num, batch_size)])


def sample_score(model: LatentFlowModel, scorer: SampleScorer, num: int, temperature: float = 1.0,
                 seed: int = 0) -> dict[str, float | int | str]:
    """The sample score (``fid``, ``precision``, ``recall``, ``recognizable``, ``sharpness``, and for a
    class-conditional model ``class_accuracy``) of ``num`` samples, every class drawn as often."""
    labels = balanced_labels(model, num)
    return {**scorer.score(draw_samples(model, num, temperature, seed=seed, labels=labels), labels),
            "temperature": temperature}


def evaluate(model: LatentFlowModel, test_set: Dataset, num_samples: int = 100, batch_size: int = 64,
             max_images: int | None = None, scorer: SampleScorer | None = None, score_samples: int = 1000,
             temperature: float = 1.0, seed: int = 0, progress: bool = True) -> dict[str, float | int | str]:
    """Every metric of :func:`likelihood_bits_per_dim`, and the sample score when ``scorer`` is given."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batches = dequantized_batches(test_set, batch_size, max_images, seed, device)
        result: dict[str, float | int | str] = likelihood_bits_per_dim(
            model, batches, num_samples, progress=progress)
    if scorer is not None and score_samples:
        score = sample_score(model, scorer, score_samples, temperature, seed)
        result.update({k: v for k, v in score.items() if k != "num_images"}, score_images=score["num_images"])
    return result


@torch.no_grad()
def test_bits_per_dim(model: LatentFlowModel, test_set: Dataset, batch_size: int, num_batches: int, seed: int,
                      device) -> float:
    """The negative ELBO in bits/dim on ``num_batches`` batches of test images: a fixed random
    draw with fixed dequantization and posterior noise, so that the numbers of one run compare."""
    model.eval()
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for x, labels in dequantized_batches(test_set, batch_size, num_batches * batch_size, seed, device):
            nats = model.loss(x, labels.to(device) if model.conditional else None)
            total, count = total + nats.sum().item(), count + len(nats)
    return bits_per_dim(total / count, model.num_dims)
