"""A preset's model laid out for images of another shape.

Each kind halves the image's height and width a number of times (its squeezes): the f-VAE and
the composite ``encoder_levels + flow_levels - 1`` (E squeezes, then every level of F but its
first), Glow ``flow_levels``, the VAE ``encoder_levels``. Images of shape ``(C, H, W)`` get

    n = min(the preset's squeezes, ceil(log2 max(H, W))),
    side = 2^n * ceil(max(H, W) / 2^n),

``pad_to = side`` where ``H`` or ``W`` is not a multiple of ``2^n`` (padding is square and
centred; outputs are cropped back), and the levels cut to ``n`` squeezes, F's levels first (the
per-level lists keep their finest entries). A 28x28 digit keeps the mnist layout (padded to 32,
five squeezes); an 8x8 one gets three (8 -> 4 -> 2 -> 1, no padding); 48x64 RGB is padded to 64.
"""
from __future__ import annotations

import dataclasses
import math

from fvae.config import ModelConfig


def squeezes(config: ModelConfig) -> int:
    """How many times the ``config``'s model halves the image's height and width."""
    if config.kind == "glow":
        return config.flow_levels
    if config.kind == "vae":
        return config.encoder_levels
    return config.encoder_levels + config.flow_levels - 1


def _cut_levels(config: ModelConfig, n: int) -> dict:
    """The level fields that give ``config``'s kind ``n`` squeezes, F's levels cut first."""
    if config.kind == "vae":
        return dict(encoder_levels=max(1, n))
    if config.kind == "glow":
        flow_levels = max(1, n)
        encoder_levels = config.encoder_levels
    else:
        encoder_levels = min(config.encoder_levels, max(1, n))
        flow_levels = max(1, n - encoder_levels + 1)
    fields = dict(encoder_levels=encoder_levels, flow_levels=flow_levels)
    for name in ("flow_steps", "flow_widths"):
        fields[name] = tuple(getattr(config, name)[:flow_levels])
    return fields


def fit_to_shape(config: ModelConfig, image_shape: tuple[int, int, int]) -> tuple[ModelConfig, str]:
    """``config`` laid out for images of ``image_shape`` (module docstring) and a line saying what
    changed (empty where nothing did)."""
    image_shape = tuple(int(s) for s in image_shape)
    if image_shape == tuple(config.image_shape):
        return config, ""
    _, h, w = image_shape
    side = max(h, w)
    n = min(squeezes(config), max(0, math.ceil(math.log2(side))))
    step = 2 ** n
    padded = step * math.ceil(side / step)
    fields = dict(image_shape=image_shape, pad_to=padded if (h % step or w % step) else None)
    if n < squeezes(config):
        fields.update(_cut_levels(config, n))
    fitted = dataclasses.replace(config, **fields)
    changed = ", ".join(f"model.{k}={_text(v)}" for k, v in fields.items() if getattr(config, k) != v)
    return fitted, changed


def _text(value) -> str:
    return "(" + ", ".join(map(str, value)) + ")" if isinstance(value, tuple) else str(value)
