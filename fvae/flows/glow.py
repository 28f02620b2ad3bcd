"""The multi-scale Glow ``F`` (Kingma & Dhariwal, 2018), built from the blocks of this package."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from fvae.errors import InputError
from fvae.flows.base import FlowBlock, FlowSequence, stack, sum_except_batch, zero_logdet
from fvae.fp32 import full_precision
from fvae.flows.registry import block_names, build_block
from fvae.flows.reshape import GaussianSplit, squeeze, unsqueeze


def glow_step(channels: int, width: int, coupling: str = "affine", mixing: str = "conv1x1_lu",
              seed: int = 0, kernel_size: int = 3, num_classes: int = 0) -> FlowSequence:
    """One step of flow: ActNorm, then channel mixing, then a coupling layer (its net's outer
    convolutions ``kernel_size`` wide, its net class-conditional with ``num_classes``); ``mixing``
    and ``coupling`` name blocks of those roles in :mod:`fvae.flows.registry`."""
    for name, role in ((mixing, "mixing"), (coupling, "coupling")):
        if name not in block_names(role):
            raise InputError(f"unknown {role} {name!r}: expected one of {block_names(role)}")
    return FlowSequence(build_block("actnorm", channels), build_block(mixing, channels, width, seed),
                        build_block(coupling, channels, width, seed, kernel_size, num_classes))


class GlowLevel(FlowSequence):
    """The steps of one level of ``F`` (each a :func:`glow_step`: ActNorm, mixing, coupling), with
    a forward pass that fuses what PyTorch allows.

    ActNorm then the mixing ``W`` is one affine map per pixel, ``W ((x + b) * e^s) = W' x + W' b``
    with ``W' = W diag(e^s)``, so each step's first two blocks become one 1x1 convolution with a
    bias. The ``K`` steps' ``W'`` and biases are built together, in a few batched ops
    (``step_maps`` of the mixing class, :mod:`fvae.flows.conv1x1`; a permutation off CUDA is a
    gather and a per-channel scale instead, no ``C x C`` matrix), and their log-dets are one
    number for the level, ``H W sum_k (sum(s_k) + log|det W_k|)``; the couplings' log-scale maps
    are summed in one op too (``Coupling.transform``). The result is the blocks' own
    (a test holds them equal), in a fraction of the ops. Until every ActNorm has seen its first
    batch (its data-dependent initialisation), and for the inverse, the blocks run one by one.
    """

    def _fusable(self) -> bool:
        return all(step.blocks[0].ready for step in self.blocks)

    @full_precision
    def _mixing_maps(self, x: torch.Tensor) -> tuple[list[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor]:
        """For inputs like ``x`` ``(B, C, H, W)``: each step's ActNorm and mixing as one map
        (``step_maps`` of the mixing class, :mod:`fvae.flows.conv1x1`) and the level's
        ActNorm-and-mixing log-det, ``H W sum_k (sum(s_k) + log|det W_k|)`` (0-d)."""
        mixings = [step.blocks[1] for step in self.blocks]
        maps, logdet = type(mixings[0]).step_maps(
            mixings, stack([step.blocks[0].log_scale for step in self.blocks]),
            stack([step.blocks[0].bias for step in self.blocks]), x.device)
        return maps, x.shape[2] * x.shape[3] * logdet

    @full_precision
    def _mix(self, x: torch.Tensor, mix: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return mix(x)

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._fusable():
            return super().forward(x, context)
        maps, logdet = self._mixing_maps(x)
        log_scales = []
        for step, mix in zip(self.blocks, maps):
            x, log_s = step.blocks[2].transform(self._mix(x, mix), context)
            if log_s is not None:
                log_scales.append(log_s)
        if log_scales:
            return x, sum_except_batch(torch.cat(log_scales, dim=1)) + logdet
        return x, logdet.expand(x.shape[0])


def per_level(value: int | Sequence[int], levels: int, name: str) -> list[int]:
    """``value`` for each of ``levels`` levels: one number for all, or a sequence of ``levels``."""
    if isinstance(value, int):
        return [value] * levels
    if len(value) != levels:
        raise InputError(f"{len(value)} {name} given for a flow of {levels} levels: give one number or one per level")
    return list(value)


class MultiScaleGlow(FlowBlock):
    """``F``: ``levels`` levels of ``steps`` Glow steps, half the channels split off between levels.

    Level ``l`` squeezes its input (except level 0 when ``squeeze_first`` is False, as in
    the f-VAE whose encoder has already squeezed), runs its steps (``steps`` and ``width``: one
    number for every level, or one per level; ``top_steps`` at the last level, where given) and,
    unless it is the last, whitens half its channels with a learned conditional prior
    (:class:`GaussianSplit`, its net of ``split_width`` where given) and passes the other half
    on. Coupling nets on a 1x1 map use 1x1 convolutions (all a 3x3 one can be there). With
    ``num_classes`` the split priors are class-conditional, their context the labels ``(B,)``,
    and with ``class_couplings`` too the coupling nets.

    ``forward(x)``: ``(B, C, H, W) -> (z, logdet)`` with ``z`` of the same shape, the
    concatenated, flattened outputs of every level, ``N(0, I)`` under the model;
    ``log p(x) = log N(z; 0, I) + logdet``.
    """

    def __init__(self, in_shape: tuple[int, int, int], levels: int, steps: int | Sequence[int],
                 width: int | Sequence[int], coupling: str = "affine", mixing: str = "conv1x1_lu",
                 squeeze_first: bool = True, top_steps: int | None = None, split_width: int | None = None,
                 num_classes: int = 0, class_couplings: bool = False):
        super().__init__()
        steps, widths = per_level(steps, levels, "steps"), per_level(width, levels, "width")
        if top_steps:
            steps[-1] = top_steps
        self.in_shape = tuple(in_shape)
        self.squeezes: list[bool] = []
        self.out_shapes: list[tuple[int, int, int]] = []
        self.flows = nn.ModuleList()
        self.splits = nn.ModuleList()
        c, h, w = in_shape
        coupling_classes = num_classes if class_couplings else 0
        for level in range(levels):
            do_squeeze = level > 0 or squeeze_first
            if do_squeeze:
                if h % 2 or w % 2:
                    raise InputError(f"level {level} of the flow must squeeze a {h}x{w} input: "
                                     f"height and width must be even; use fewer levels")
                c, h, w = 4 * c, h // 2, w // 2
            self.squeezes.append(do_squeeze)
            kernel = 1 if h == w == 1 else 3
            self.flows.append(GlowLevel(*[glow_step(c, widths[level], coupling, mixing, seed=sum(steps[:level]) + k,
                                                       kernel_size=kernel, num_classes=coupling_classes)
                                             for k in range(steps[level])]))
            if level < levels - 1:
                kept = c // 2
                self.splits.append(GaussianSplit(kept, c - kept, width=split_width, num_classes=num_classes))
                self.out_shapes.append((c - kept, h, w))
                c = kept
        self.out_shapes.append((c, h, w))

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.in_shape:
            raise InputError(f"flow built for inputs of shape {self.in_shape}, got {tuple(x.shape[1:])}")

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        logdet = zero_logdet(x)
        outputs = []
        for level, flow in enumerate(self.flows):
            if self.squeezes[level]:
                x = squeeze(x)
            x, ld = flow(x, context)
            logdet = logdet + ld
            if level < len(self.splits):
                x, ld = self.splits[level](x, context)
                logdet = logdet + ld
                kept = self.splits[level].kept
                outputs.append(x[:, kept:].flatten(1))
                x = x[:, :kept]
        outputs.append(x.flatten(1))
        return torch.cat(outputs, dim=1).view(-1, *self.in_shape), logdet

    def inverse(self, z: torch.Tensor, context=None) -> torch.Tensor:
        self._check(z)
        sizes = [c * h * w for c, h, w in self.out_shapes]
        parts = [p.reshape(-1, *shape) for p, shape in zip(z.flatten(1).split(sizes, dim=1), self.out_shapes)]
        x = parts[-1]
        for level in reversed(range(len(self.flows))):
            if level < len(self.splits):
                x = self.splits[level].inverse(torch.cat([x, parts[level]], dim=1), context)
            x = self.flows[level].inverse(x, context)
            if self.squeezes[level]:
                x = unsqueeze(x)
        return x

    @property
    def top_dims(self) -> int:
        """The size of the top level's output, the last entries of the flattened ``z``."""
        c, h, w = self.out_shapes[-1]
        return c * h * w
