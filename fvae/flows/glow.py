"""The multi-scale Glow ``F`` (Kingma & Dhariwal, 2018), built from the blocks of this package."""
from __future__ import annotations

import torch
from torch import nn

from fvae.flows.actnorm import ActNorm
from fvae.flows.base import FlowSequence
from fvae.flows.conv1x1 import InvertibleConv1x1, InvertibleConv1x1LU, Permutation
from fvae.flows.coupling import AdditiveCoupling, AffineCoupling
from fvae.flows.reshape import GaussianSplit, squeeze, unsqueeze

COUPLINGS = ("affine", "additive")
MIXINGS = ("conv1x1_lu", "conv1x1", "shuffle", "reverse")


def glow_step(channels: int, width: int, coupling: str = "affine", mixing: str = "conv1x1_lu",
              seed: int = 0) -> FlowSequence:
    """One step of flow: ActNorm, then channel mixing, then a coupling layer."""
    if mixing == "conv1x1_lu":
        mix = InvertibleConv1x1LU(channels)
    elif mixing == "conv1x1":
        mix = InvertibleConv1x1(channels)
    elif mixing in ("shuffle", "reverse"):
        mix = Permutation(channels, mixing, seed)
    else:
        raise ValueError(f"unknown mixing {mixing!r}: expected one of {MIXINGS}")
    if coupling == "affine":
        couple = AffineCoupling(channels, width)
    elif coupling == "additive":
        couple = AdditiveCoupling(channels, width)
    else:
        raise ValueError(f"unknown coupling {coupling!r}: expected one of {COUPLINGS}")
    return FlowSequence(ActNorm(channels), mix, couple)


class MultiScaleGlow(nn.Module):
    """``F``: ``levels`` levels of ``steps`` Glow steps, half the channels split off between levels.

    Level ``l`` squeezes its input (except level 0 when ``squeeze_first`` is False, as in
    the f-VAE whose encoder has already squeezed), runs its steps (``top_steps`` at the last
    level, where given) and, unless it is the last, whitens half its channels with a learned
    conditional prior (:class:`GaussianSplit`, its net of ``split_width`` where given) and
    passes the other half on.

    ``forward(x)``: ``(B, C, H, W) -> (z, logdet)`` with ``z`` of the same shape, the
    concatenated, flattened outputs of every level, ``N(0, I)`` under the model;
    ``log p(x) = log N(z; 0, I) + logdet``.
    """

    def __init__(self, in_shape: tuple[int, int, int], levels: int, steps: int, width: int,
                 coupling: str = "affine", mixing: str = "conv1x1_lu", squeeze_first: bool = True,
                 top_steps: int | None = None, split_width: int | None = None):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.squeezes: list[bool] = []
        self.out_shapes: list[tuple[int, int, int]] = []
        self.flows = nn.ModuleList()
        self.splits = nn.ModuleList()
        c, h, w = in_shape
        for level in range(levels):
            do_squeeze = level > 0 or squeeze_first
            if do_squeeze:
                if h % 2 or w % 2:
                    raise ValueError(f"level {level} of the flow must squeeze a {h}x{w} input: "
                                     f"height and width must be even; use fewer levels")
                c, h, w = 4 * c, h // 2, w // 2
            self.squeezes.append(do_squeeze)
            count = top_steps if level == levels - 1 and top_steps else steps
            self.flows.append(FlowSequence(*[glow_step(c, width, coupling, mixing, seed=level * steps + k)
                                             for k in range(count)]))
            if level < levels - 1:
                kept = c // 2
                self.splits.append(GaussianSplit(kept, c - kept, width=split_width))
                self.out_shapes.append((c - kept, h, w))
                c = kept
        self.out_shapes.append((c, h, w))

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"flow built for inputs of shape {self.in_shape}, got {tuple(x.shape[1:])}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        logdet = x.new_zeros(x.shape[0])
        outputs = []
        for level, flow in enumerate(self.flows):
            if self.squeezes[level]:
                x = squeeze(x)
            x, ld = flow(x)
            logdet = logdet + ld
            if level < len(self.splits):
                kept = x.shape[1] // 2
                eps, ld = self.splits[level](x[:, :kept], x[:, kept:])
                logdet = logdet + ld
                outputs.append(eps.flatten(1))
                x = x[:, :kept]
        outputs.append(x.flatten(1))
        return torch.cat(outputs, dim=1).view(-1, *self.in_shape), logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z)
        sizes = [c * h * w for c, h, w in self.out_shapes]
        parts = [p.reshape(-1, *shape) for p, shape in zip(z.flatten(1).split(sizes, dim=1), self.out_shapes)]
        x = parts[-1]
        for level in reversed(range(len(self.flows))):
            if level < len(self.splits):
                x = torch.cat([x, self.splits[level].inverse(x, parts[level])], dim=1)
            x = self.flows[level].inverse(x)
            if self.squeezes[level]:
                x = unsqueeze(x)
        return x
