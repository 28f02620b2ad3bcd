"""Weights from a safetensors file into a module, checked name by name and shape by shape."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from fvae.errors import WeightsError

# names that earlier releases gave weights (fvae 0.3: the f-VAE's conditional part was a
# ConditionalFlow of "steps", now a FlowSequence of "blocks")
RENAMED = (("inner.steps.", "inner.blocks."),)



def upgrade_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with the names of earlier releases (:data:`RENAMED`) replaced by today's."""
    renamed = {}
    for name, tensor in tensors.items():
        for old, new in RENAMED:
            if name.startswith(old):
                name = new + name[len(old):]
        renamed[name] = tensor
    return renamed


def _fits(stored: torch.dtype, wanted: torch.dtype) -> bool:
    """Whether weights stored as ``stored`` load into a tensor of ``wanted``: the same type, or a half
    type (the shipped models are stored in float16) into a floating-point tensor."""
    return stored == wanted or (stored in (torch.float16, torch.bfloat16) and wanted.is_floating_point)


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Load safetensors weights, with a clear message when the file is damaged or names or shapes differ."""
    try:
        tensors = upgrade_names(load_file(file))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"cannot read {file}: {error}") from error
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)}, model {tuple(own[k].shape)}"
              for k in set(own) & set(tensors) if tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise WeightsError(f"weights in {file} do not fit the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    dtypes = [f"{k}: {str(tensors[k].dtype)[6:]}, model {str(own[k].dtype)[6:]}" for k in own
              if not _fits(tensors[k].dtype, own[k].dtype)]
    if dtypes:
        raise WeightsError(f"weights in {file} are of another type than the model's: {'; '.join(dtypes[:3])}"
                           f"{f' and {len(dtypes) - 3} more' if len(dtypes) > 3 else ''}")
    broken = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise WeightsError(f"weights in {file} hold non-finite values (NaN or inf) in {len(broken)} tensor(s), "
                           f"the first {broken[0]}: they are not a usable model")
    module.load_state_dict(tensors)
