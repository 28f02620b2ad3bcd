"""Graded degradations of images, the yardstick the sample score is validated against.

Each takes images ``(B, C, H, W)`` in ``[0, 1]`` and a strength (0: unchanged) and returns
images of the same shape in ``[0, 1]``; randomness comes from the generator passed in.
``benchmarks/validate_score.py`` and ``tests/test_quality.py`` check that the score gets
worse with each strength.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fvae.errors import InputError


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Each image blurred by a Gaussian of its own standard deviation ``sigma`` (pixels; 0: none)."""
    n, c = x.shape[:2]
    sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(n)
    if float(sigma.max()) <= 0:
        return x
    sigma = sigma.clamp(min=1e-3)
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, K)
    flat = x.reshape(1, n * c, *x.shape[2:])
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * c)
    return flat.reshape(x.shape)


def additive_noise(x: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    """``x + N(0, std^2)``, clipped to ``[0, 1]``."""
    return (x + std * torch.randn(x.shape, generator=g)).clamp(0, 1)


def uniform_noise(x: torch.Tensor, weight: float, g: torch.Generator) -> torch.Tensor:
    """``(1 - weight) x + weight U[0, 1)``: the image fades into uniform noise."""
    return (1 - weight) * x + weight * torch.rand(x.shape, generator=g)


def shuffle_patches(x: torch.Tensor, share: float, g: torch.Generator, grid: int = 4) -> torch.Tensor:
    """Cut each image into ``grid x grid`` patches and move a ``share`` of them: the chosen
    patches trade places in a random cycle, so every chosen patch leaves its place."""
    n, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    if ph * grid != h or pw * grid != w:  # crop to a multiple of the grid, shuffle, pad back
        inner = shuffle_patches(x[:, :, : ph * grid, : pw * grid], share, g, grid)
        return F.pad(inner, (0, w - pw * grid, 0, h - ph * grid))
    patches = x.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    moved = round(share * grid * grid)
    out = patches.clone()
    if moved >= 2:
        for i in range(n):
            chosen = torch.randperm(grid * grid, generator=g)[:moved]
            out[i, chosen] = patches[i, chosen.roll(1)]
    return out.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def degrade(x: torch.Tensor, kind: str, strength: float, g: torch.Generator) -> torch.Tensor:
    """One of :data:`DEGRADATIONS` at ``strength``."""
    if kind == "blur":
        return gaussian_blur(x, strength)
    if kind == "additive_noise":
        return additive_noise(x, strength, g)
    if kind == "uniform_noise":
        return uniform_noise(x, strength, g)
    if kind == "shuffled_patches":
        return shuffle_patches(x, strength, g)
    raise InputError(f"unknown degradation {kind!r}: expected one of {tuple(DEGRADATIONS)}")


# kind -> graded strengths (the first, 0, leaves images unchanged): blur sigma in pixels, noise
# standard deviation, the weight of uniform noise, the share of 7x7 patches moved
DEGRADATIONS: dict[str, tuple[float, ...]] = {
    "blur": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
    "additive_noise": (0.0, 0.1, 0.2, 0.3, 0.5),
    "uniform_noise": (0.0, 0.15, 0.3, 0.45, 0.6),
    "shuffled_patches": (0.0, 0.25, 0.5, 0.75, 1.0),
}
