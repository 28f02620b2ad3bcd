"""The standard normal density ``N(0, I)`` in log space, shared by the priors and the decoders."""
from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over all but the batch dimension: ``(B, ...) -> (B,)``."""
    z = z.flatten(1)
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * LOG_2PI)
