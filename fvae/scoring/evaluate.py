"""Evaluation on a test split: bits/dim from the ELBO, the importance-weighted bound and (for
Glow) the exact density; reconstruction error; the sample score (:mod:`fvae.scoring.score`)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from fvae.data import dequantize
from fvae.models import LatentFlowModel
from fvae.scoring.metrics import bits_per_dim, bits_per_dim_summary, psnr
from fvae.scoring.score import SampleScorer


@torch.no_grad()
def likelihood_bits_per_dim(model: LatentFlowModel, batches: Iterable[torch.Tensor], num_samples: int = 100,
                            chunk_size: int = 4096, progress: bool = False) -> dict[str, float]:
    """Mean bits/dim over ``batches`` of images in ``[0, 1)``: ``elbo_bpd`` (negative ELBO),
    ``iw_bpd`` (IW bound with ``num_samples`` samples), ``exact_bpd`` (models with an exact
    density), plus the reconstruction ``mse`` and ``psnr`` of ``decode(encode(x))``.

    Beside each mean, the median and the largest of the images' own figures (``exact_bpd_median``,
    ``exact_bpd_max``, ...): a mean far above its median comes from a few images the model gives
    almost no probability (README, Results on the embedded digits, the 30-minute table)."""
    model.eval()
    nats: dict[str, list[torch.Tensor]] = {"elbo": [], "iw": [], "exact": []}
    se, count = 0.0, 0
    exact = getattr(model, "exact_log_likelihood", None)
    for x in tqdm(batches, desc="eval", disable=not progress):
        nats["elbo"].append(model.loss(x).double().cpu())
        if num_samples:
            nats["iw"].append(-model.log_likelihood(x, num_samples, chunk_size).double().cpu())
        if exact is not None:
            nats["exact"].append(-exact(x).double().cpu())
        se += (model.decode(model.encode(x)) - x).pow(2).flatten(1).mean(1).sum().item()
        count += len(x)
    result = {}
    for key, parts in nats.items():
        if parts:
            result |= bits_per_dim_summary(key, torch.cat(parts), model.num_dims)
    mse = se / count
    result.update(recon_mse=mse, psnr=psnr(mse) if mse > 0 else math.inf, num_images=count)
    return result


def dequantized_batches(dataset: Dataset, batch_size: int, max_images: int | None, seed: int, device):
    """``max_images`` images of ``dataset`` (all when None), dequantized with fixed noise.

    The images are a uniform draw in an order fixed by ``seed``, not the first rows: some
    test sets (the embedded digits) are sorted by class.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g)[:max_images].tolist()
    for images, _ in DataLoader(Subset(dataset, order), batch_size=batch_size):
        yield dequantize(images, g).to(device)


@torch.no_grad()
def draw_samples(model: LatentFlowModel, num: int, temperature: float = 1.0, batch_size: int = 250,
                 seed: int = 0) -> torch.Tensor:
    """``num`` samples ``(num, C, H, W)`` in ``[0, 1]`` on the CPU, from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([model.sample(min(batch_size, num - i), temperature).float().cpu()
                          for i in range(0, num, batch_size)])


def sample_score(model: LatentFlowModel, scorer: SampleScorer, num: int, temperature: float = 1.0,
                 seed: int = 0) -> dict[str, float | int | str]:
    """The sample score (``fid``, ``precision``, ``recall``, ``recognizable``) of ``num`` samples."""
    return {**scorer.score(draw_samples(model, num, temperature, seed=seed)), "temperature": temperature}


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
        for x in dequantized_batches(test_set, batch_size, num_batches * batch_size, seed, device):
            nats = model.loss(x)
            total, count = total + nats.sum().item(), count + len(nats)
    return bits_per_dim(total / count, model.num_dims)
