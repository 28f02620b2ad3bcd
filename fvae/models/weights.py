"""Weights from a safetensors file into a module, checked name by name and shape by shape."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


class WeightsError(ValueError):
    """A weights file that cannot be read, or whose tensors do not fit the module."""


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Load safetensors weights, with a clear message when the file is damaged or names or shapes differ."""
    try:
        tensors = load_file(file)
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"cannot read {file}: {error}") from error
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)}, model {tuple(own[k].shape)}"
              for k in set(own) & set(tensors) if tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise WeightsError(f"weights in {file} do not fit the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    module.load_state_dict(tensors)
