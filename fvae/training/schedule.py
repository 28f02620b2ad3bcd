"""The learning-rate schedule: a linear warm-up, then constant, cosine or linear decay to 0.

With ``w`` warm-up steps and ``N = train.max_steps``, the factor on ``train.lr`` at step ``n`` is
``(n + 1) / w`` during the warm-up, then, with ``p = (n - w) / (N - w)`` the share of the rest done,

    constant: 1        cosine: (1 + cos(pi p)) / 2        linear: 1 - p

A function of the step alone, so a resumed run follows the schedule of an uninterrupted one.
"""
from __future__ import annotations

import math

from fvae.config import SCHEDULES
from fvae.errors import InputError


def lr_factor(step: int, schedule: str, warmup_steps: int, max_steps: int) -> float:
    """The factor on the learning rate at ``step`` (module docstring)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise InputError(f"unknown schedule {schedule!r}: expected one of {SCHEDULES}")
