"""Channel mixing: invertible 1x1 convolutions (plain and LU) and fixed permutations.

Each mixing block is a map ``y = W x`` at every pixel. Its class's ``folded(blocks, log_scale,
bias)`` takes several blocks of the same size, each after an ActNorm ``(x + b_k) e^(s_k)`` (their
parameters stacked, ``(K, 1, C, 1, 1)``), and gives ``W_k diag(e^(s_k))`` ``(K, C, C)``, the shifts
``W_k (b_k e^(s_k))`` ``(K, C)`` and the log-det a pixel, ``sum_k (sum(s_k) + log|det W_k|)``: the few
batched ops with which :class:`~fvae.flows.glow.GlowLevel` makes a whole level's ActNorms and
mixings one 1x1 convolution a step, instead of a dozen ops per block. The convolutions build
their dense matrices (``stacked``); a permutation's, all but empty, is scattered.
``step_maps(blocks, log_scale, bias, device)`` gives the level those steps as functions
``x -> W_k diag(e^(s_k)) (x + b_k)``: the convolutions, or for a permutation off CUDA a gather and
a per-channel affine map (:class:`Permutation`).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fvae.errors import InputError
from fvae.flows.base import FlowBlock, stack, zero_logdet
from fvae.fp32 import full_precision


def _fold_dense(weights: torch.Tensor, logdet: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``folded`` (module docstring) for dense ``weights`` ``(K, C, C)`` with ``sum_k log|det W_k|``."""
    k, c = weights.shape[:2]
    bias, log_scale = bias.view(k, c, 1), log_scale.view(k, 1, c)
    weights = weights.to(bias.dtype) * torch.exp(log_scale)
    return weights, torch.bmm(weights, bias).view(k, c), logdet + log_scale.sum()


def _convolutions(weights: torch.Tensor, shift: torch.Tensor) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The maps ``x -> W'_k x + shift_k``, one 1x1 convolution each, for ``weights`` ``(K, C, C)`` and
    ``shift`` ``(K, C)``."""
    k, c = shift.shape
    return [functools.partial(F.conv2d, weight=w, bias=b)
            for w, b in zip(weights.view(k, c, c, 1, 1).unbind(0), shift.unbind(0))]


class Mixing(FlowBlock):
    """Base of the mixing blocks: ``folded`` (module docstring) in the subclass, and from it
    ``step_maps``, each step one 1x1 convolution."""

    @staticmethod
    def folded(blocks: Sequence["Mixing"], log_scale: torch.Tensor, bias: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def step_maps(cls, blocks: Sequence["Mixing"], log_scale: torch.Tensor, bias: torch.Tensor,
                  device: torch.device) -> tuple[list[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor]:
        """The ``K`` blocks after their ActNorms (parameters ``(K, 1, C, 1, 1)``) as maps of
        ``(B, C, H, W)`` inputs on ``device``, and their log-det a pixel (0-d)."""
        weights, shift, logdet = cls.folded(blocks, log_scale, bias)
        return _convolutions(weights, shift), logdet


def _random_rotation(channels: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(channels, channels))
    return q


class InvertibleConv1x1(Mixing):
    """``y = W x`` at every pixel, ``W``: ``(C, C)``; ``logdet = H * W * log|det W|``.

    Initialised to a random rotation (``log|det W| = 0``).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(_random_rotation(channels))

    @full_precision
    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.shape[2] * x.shape[3] * torch.linalg.slogdet(self.weight)[1]
        return F.conv2d(x, self.weight[:, :, None, None]), logdet.expand(x.shape[0])

    @full_precision
    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None])

    @staticmethod
    def stacked(blocks: Sequence["InvertibleConv1x1"]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_1 .. W_K)``, ``(K, C, C)``, and ``sum_k log|det W_k|``."""
        weights = stack([b.weight for b in blocks])
        return weights, torch.linalg.slogdet(weights)[1].sum()

    @staticmethod
    def folded(blocks: Sequence["InvertibleConv1x1"], log_scale: torch.Tensor, bias: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The blocks after ActNorms (module docstring)."""
        return _fold_dense(*InvertibleConv1x1.stacked(blocks), log_scale, bias)


class InvertibleConv1x1LU(Mixing):
    """The 1x1 convolution with ``W = P L (U + diag(sign * exp(log_s)))``.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular, ``U`` strictly
    upper-triangular, so ``log|det W| = sum(log_s)`` costs ``O(C)`` instead of ``O(C^3)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        p, lower, upper = torch.linalg.lu(_random_rotation(channels))
        diag = torch.diagonal(upper)
        below = torch.tril_indices(channels, channels, -1)
        self.register_buffer("permutation", p)
        self.register_buffer("sign_s", torch.sign(diag))
        self.register_buffer("below", below)
        self.register_buffer("eye", torch.eye(channels))
        # only the free entries are parameters: C(C-1)/2 below and above the diagonal, C on it
        self.lower = nn.Parameter(lower[below[0], below[1]])
        self.upper = nn.Parameter(upper.T[below[0], below[1]])
        self.log_s = nn.Parameter(torch.log(diag.abs()))

    def weight(self) -> torch.Tensor:
        i, j = self.below
        lower = self.eye.index_put((i, j), self.lower)
        upper = torch.diag(self.sign_s * torch.exp(self.log_s)).index_put((j, i), self.upper)
        return self.permutation @ lower @ upper

    @full_precision
    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.shape[2] * x.shape[3] * self.log_s.sum()
        return F.conv2d(x, self.weight()[:, :, None, None]), logdet.expand(x.shape[0])

    @full_precision
    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight())[:, :, None, None])

    @staticmethod
    def stacked(blocks: Sequence["InvertibleConv1x1LU"]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_1 .. W_K)``, ``(K, C, C)``, each ``P_k L_k (U_k + diag(sign_k exp(log_s_k)))``, built
        in one batch, and ``sum_k log|det W_k| = sum_k sum(log_s_k)``."""
        first = blocks[0]
        c = first.log_s.shape[0]
        i, j = first.below
        log_s = stack([b.log_s for b in blocks])
        k = log_s.shape[0]
        lower = log_s.new_zeros(k, c, c)
        lower[:, i, j] = stack([b.lower for b in blocks])
        upper = torch.diag_embed(torch.stack([b.sign_s for b in blocks]) * torch.exp(log_s))
        upper[:, j, i] = stack([b.upper for b in blocks])
        permutations = torch.stack([b.permutation for b in blocks])
        return torch.bmm(torch.bmm(permutations, lower + first.eye), upper), log_s.sum()

    @staticmethod
    def folded(blocks: Sequence["InvertibleConv1x1LU"], log_scale: torch.Tensor, bias: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The blocks after ActNorms (module docstring)."""
        return _fold_dense(*InvertibleConv1x1LU.stacked(blocks), log_scale, bias)


class _PermuteChannels(torch.autograd.Function):
    """``x[:, perm]`` whose backward is the gather by the inverse permutation: one op each way, where
    autograd's own backward scatters into zeros (two)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, perm: torch.Tensor, inverse_perm: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse_perm)
        return x.index_select(1, perm)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        inverse_perm, = ctx.saved_tensors
        return grad.index_select(1, inverse_perm), None, None


def _permute_and_scale(x: torch.Tensor, perm: torch.Tensor, inverse_perm: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor) -> torch.Tensor:
    """``x[:, perm] * weight + bias`` per channel, ``weight`` ``(C, 1, 1, 1)``, ``bias`` ``(C,)``: a gather,
    then a depthwise 1x1 convolution (its backward one op for the input, weight and bias)."""
    return F.conv2d(_PermuteChannels.apply(x, perm, inverse_perm), weight, bias, groups=x.shape[1])


class Permutation(Mixing):
    """A fixed channel permutation (``logdet = 0``): reversed, or random with a fixed seed.

    In a fused level (``step_maps``) a step's ActNorm and permutation are, with ``dense`` True, one
    1x1 convolution by the scattered ``P diag(e^s)``, as the other mixings (the fewest ops: on a GPU,
    kernel launches); with ``dense`` False, a gather of the channels and a per-channel affine map, no
    ``C x C`` matrix built or multiplied (two more ops a step). ``None``, the default: dense on CUDA
    (reasoned, not yet measured against gathered there: ``benchmarks/gpu_check.py`` has the row),
    gathered elsewhere. On a CPU the dense matrices cost most where channels are many and maps
    small: the celebahq64 f-VAE's top level multiplies 1,536 x 1,536 at 1x1, and its fp32 step
    takes 1.27-1.40x as long dense (``benchmarks/permutation_path.py``).
    """

    def __init__(self, channels: int, kind: str = "reverse", seed: int = 0):
        super().__init__()
        if kind == "reverse":
            perm = torch.arange(channels - 1, -1, -1)
        elif kind == "shuffle":
            perm = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        else:
            raise InputError(f"unknown permutation {kind!r}: expected 'reverse' or 'shuffle'")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))
        self.dense: bool | None = None

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, self.perm], zero_logdet(x)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        return y[:, self.inverse_perm]

    @staticmethod
    def _per_step(blocks: Sequence["Permutation"], log_scale: torch.Tensor, bias: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``K`` steps' permutations ``(K, C)``, ActNorm log-scales and biases as ``(K, C)``, and
        the scales ``e^s`` ``(K, C)``."""
        perms = torch.stack([b.perm for b in blocks])
        k, c = perms.shape
        log_scale = log_scale.view(k, c)
        return perms, log_scale, bias.view(k, c), torch.exp(log_scale)

    @staticmethod
    def folded(blocks: Sequence["Permutation"], log_scale: torch.Tensor, bias: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The blocks ``W_k = I[perm_k]`` (``log|det| = 0``) after ActNorms (module docstring): row ``i``
        of ``W_k diag(e^(s_k))`` holds ``e^(s_k[p])`` at column ``p = perm_k[i]``, scattered, and the
        shift is ``b_k e^(s_k)`` gathered at ``perm_k``. No ``C x C`` product in either pass."""
        perms, log_scale, bias, scale = Permutation._per_step(blocks, log_scale, bias)
        k, c = perms.shape
        weights = log_scale.new_zeros(k, c, c).scatter_(2, perms.unsqueeze(2), scale.gather(1, perms).unsqueeze(2))
        return weights, (bias * scale).gather(1, perms), log_scale.sum()

    @classmethod
    def step_maps(cls, blocks: Sequence["Permutation"], log_scale: torch.Tensor, bias: torch.Tensor,
                  device: torch.device) -> tuple[list[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor]:
        """As :meth:`Mixing.step_maps`; gathered where ``dense`` (class docstring) says so: step ``k``
        maps ``x`` to ``x[:, perm_k] e^(s_k[perm_k]) + (b_k e^(s_k))[perm_k]``."""
        dense = blocks[0].dense
        if dense or (dense is None and device.type == "cuda"):
            return super().step_maps(blocks, log_scale, bias, device)
        perms, log_scale, bias, scale = cls._per_step(blocks, log_scale, bias)
        k, c = perms.shape
        gathered = torch.stack([scale, bias * scale], dim=1).gather(2, perms.unsqueeze(1).expand(k, 2, c))
        weights, shifts = gathered[:, 0].reshape(k, c, 1, 1, 1).unbind(0), gathered[:, 1].unbind(0)
        maps = [functools.partial(_permute_and_scale, perm=b.perm, inverse_perm=b.inverse_perm, weight=w, bias=t)
                for b, w, t in zip(blocks, weights, shifts)]
        return maps, log_scale.sum()
