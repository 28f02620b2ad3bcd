"""What must stay in fp32 under mixed precision: the markers the models use.

Under bf16 autocast the convolutional nets (coupling nets, priors, ``E``, ``G``) may run in
bf16. A flow's log-determinant must be that of the map actually applied, and a likelihood
must see exact differences, so the flows' own arithmetic, the 1x1 convolutions and their
determinants, ActNorm, the residual streams of ``E`` and ``G`` and every loss sum run in fp32:
net outputs pass through :func:`to_fp32` before a flow uses them, and whole methods that must
not be autocast are wrapped in :func:`full_precision`. The engine (``fvae.training.precision``) only
decides whether autocast is on.
"""
from __future__ import annotations

import functools

import torch


def to_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (bf16, fp16) as fp32; fp32 and fp64 unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def full_precision(method):
    """Run a flow method with autocast off and its half-precision tensor arguments in fp32.

    Under mixed precision the convolutional nets inside couplings, priors, ``E`` and ``G`` may
    run in bf16; what a log-determinant must match exactly (the 1x1 convolution and its
    determinant, ActNorm) runs through this, and nets' outputs are cast back with
    :func:`to_fp32` before the flow uses them, so forward, inverse and log-det agree.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        args = [to_fp32(a) if isinstance(a, torch.Tensor) else a for a in args]
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        device = "cpu" if device == "meta" else device  # shapes only (fvae.models.budget): autocast has no meta
        with torch.autocast(device, enabled=False):
            return method(self, *args, **kwargs)

    return wrapper
