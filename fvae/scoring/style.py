"""The style of a handwritten stroke, measured on images ``(B, 1, H, W)`` in ``[0, 1]``:

- ink mass: the mean pixel value;
- stroke thickness: ``2 A / P``, ``A`` the inked pixels (``> 1/2``) and ``P`` those of them with
  an uninked 4-neighbour (the outline): a stroke of width ``w`` and length ``l >> w`` has
  ``A = w l`` and ``P = 2 l``, so ``2 A / P = w``;
- slant: the shear of the ink's second moments, ``cov(col, row) / var(row)`` with rows counted
  upwards, the horizontal drift of the ink per row (positive leans right, as italic).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ink_mass(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B,)``: the mean pixel value."""
    return images.flatten(1).mean(1)


def stroke_thickness(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W) -> (B,)``: ``2 A / P`` in pixels (module docstring); 0 for an empty image."""
    inked = (images > 0.5).float()
    neighbours = F.conv2d(F.pad(inked, (1, 1, 1, 1)), inked.new_tensor([[[[0, 1, 0], [1, 0, 1], [0, 1, 0]]]]))
    outline = inked * (neighbours < 4).float()
    return 2 * inked.flatten(1).sum(1) / outline.flatten(1).sum(1).clamp(min=1)


def slant(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W) -> (B,)``: ``cov(col, row) / var(row)`` of the ink, rows counted upwards."""
    weights = images[:, 0].clamp(min=0)
    total = weights.flatten(1).sum(1).clamp(min=1e-6)
    h, w = weights.shape[1:]
    rows = -torch.arange(h, dtype=images.dtype, device=images.device)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=images.dtype, device=images.device)[None].expand(h, w)
    mean_r = (weights * rows).flatten(1).sum(1) / total
    mean_c = (weights * cols).flatten(1).sum(1) / total
    dr, dc = rows - mean_r[:, None, None], cols - mean_c[:, None, None]
    cov = (weights * dr * dc).flatten(1).sum(1) / total
    var = (weights * dr * dr).flatten(1).sum(1) / total
    return cov / var.clamp(min=1e-6)
