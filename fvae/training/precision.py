"""Numerical precision of training: where bf16 autocast runs, and TF32 on GPUs.

The models mark what must stay in fp32 (:func:`fvae.flows.base.full_precision`); this module
only decides whether autocast is on: ``train.precision`` ``32`` turns it off, ``bf16`` turns it
on anywhere, and ``auto`` (the default) picks whichever was measured faster on this kind of
device: bf16 on a CPU with AVX-512 BF16, whose bf16 dot products oneDNN's convolutions run in
hardware (measured on two: a Xeon with AMX, its mnist f-VAE step 1.33x as fast as fp32 and the
default run 1.36x fvae 0.9.1's; an AMD EPYC (Zen 4) without AMX, 1.28x and 1.26x,
``benchmarks/cpu_precision.py``, ``benchmarks/train_speed.py``), fp32 on other CPUs (where bf16 is
emulated and several times slower) and on GPUs (at the presets' sizes an H200 is launch-bound and
bf16's casts made steps slower, docs/engine.md, "GPU check").
"""
from __future__ import annotations

import contextlib

import torch


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16's dot products, with or without
    AMX tiles), so that oneDNN runs bf16 convolutions natively rather than emulated."""
    return torch.backends.mkldnn.is_available() and torch.cpu._is_avx512_bf16_supported()


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether training on ``device`` runs under bf16 autocast (``precision``: ``32``, ``bf16``, ``auto``)."""
    if precision == "auto":
        return device.type == "cpu" and cpu_has_bf16_matmul()
    return precision == "bf16"


def autocast_for(device: torch.device, bf16: bool):
    """bf16 autocast on ``device``, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for fp32 matrix multiplies and convolutions (GPUs from Ampere on)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
