"""Numerical precision of training: where bf16 autocast runs, and TF32 on GPUs.

The models mark what must stay in fp32 (:func:`fvae.flows.base.full_precision`); this module
only decides whether autocast is on: ``train.precision`` ``32`` (the default) turns it off,
``bf16`` turns it on anywhere (CPUs too), ``auto`` means bf16 on a GPU and fp32 on a CPU. fp32 is
the default on GPUs too: at the presets' sizes an H200 is launch-bound and bf16's casts made
steps slower, not faster (docs/engine.md, "GPU check").
"""
from __future__ import annotations

import contextlib

import torch


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether training on ``device`` runs under bf16 autocast."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, bf16: bool):
    """bf16 autocast on ``device``, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for fp32 matrix multiplies and convolutions (GPUs from Ampere on)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
