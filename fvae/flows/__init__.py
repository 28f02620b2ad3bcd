"""Flow blocks: each ``forward(x, context=None) -> (y, logdet)``, ``inverse(y, context=None) -> x``;
named in :mod:`fvae.flows.registry`."""
from fvae.flows.actnorm import ActNorm
from fvae.flows.base import ConditionalBlock, FlowBlock, FlowSequence
from fvae.flows.conditional import ConditionalAffine, ConditionalShift
from fvae.flows.conv1x1 import InvertibleConv1x1, InvertibleConv1x1LU, Permutation
from fvae.flows.coupling import AdditiveCoupling, AffineCoupling
from fvae.flows.glow import MultiScaleGlow, glow_step
from fvae.flows.registry import BLOCKS, block_names, build_block
from fvae.flows.reshape import GaussianSplit, Squeeze, squeeze, unsqueeze

__all__ = [
    "BLOCKS", "ActNorm", "AdditiveCoupling", "AffineCoupling", "ConditionalAffine", "ConditionalBlock",
    "ConditionalShift", "FlowBlock", "FlowSequence", "GaussianSplit", "InvertibleConv1x1", "InvertibleConv1x1LU",
    "MultiScaleGlow", "Permutation", "Squeeze", "block_names", "build_block", "glow_step", "squeeze", "unsqueeze",
]
