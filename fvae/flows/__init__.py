"""Flow blocks: each ``forward(x) -> (y, logdet)``, ``inverse(y) -> x``."""
from fvae.flows.actnorm import ActNorm
from fvae.flows.base import FlowSequence
from fvae.flows.conditional import ConditionalAffine, ConditionalFlow, ConditionalShift, ConditionalTransform
from fvae.flows.conv1x1 import InvertibleConv1x1, InvertibleConv1x1LU, Permutation
from fvae.flows.coupling import AdditiveCoupling, AffineCoupling
from fvae.flows.glow import MultiScaleGlow, glow_step
from fvae.flows.reshape import GaussianSplit, Squeeze, squeeze, unsqueeze

__all__ = [
    "ActNorm", "AdditiveCoupling", "AffineCoupling", "ConditionalAffine", "ConditionalFlow",
    "ConditionalShift", "ConditionalTransform", "FlowSequence", "GaussianSplit", "InvertibleConv1x1",
    "InvertibleConv1x1LU", "MultiScaleGlow", "Permutation", "Squeeze", "glow_step", "squeeze", "unsqueeze",
]
