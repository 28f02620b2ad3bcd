"""The coupling layers' networks, and the memory format they run in.

Plain convolutional nets: they map tensors to tensors and know nothing of flows.
"""
from __future__ import annotations

import torch
from torch import nn

from fvae.flows.base import class_channel_bias


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias, so that the block around it starts as the identity."""
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


def memory_format_for(in_channels: int) -> torch.memory_format:
    """Channels-last for nets whose input has at most 16 channels, NCHW above.

    oneDNN's CPU convolutions with few input or output channels run faster channels-last;
    wide ones on small maps run slower, because each call then also reorders the weight.
    ``benchmarks/memory_format.py`` times every preset both ways and with this choice.
    """
    return torch.channels_last if in_channels <= 16 else torch.contiguous_format


class CouplingNet(nn.Sequential):
    """``conv3x3(width) - ReLU - conv1x1(width) - ReLU - conv3x3(out, zero-init)``; keeps H, W.

    With ``num_classes`` the net also takes class labels (``(B,)`` indices or ``(B, num_classes)``
    weights): each class adds a learned bias ``b_y`` (zero at the start) to the first layer,
    ``h = conv3x3(x) + b_y``, so that the whole map it computes depends on the class.

    ``kernel_size=1`` makes the outer convolutions 1x1: on a 1x1 map a 3x3 convolution is
    one, its eight outer taps multiplying only the zero padding. Runs in ``memory_format``
    (see :func:`memory_format_for`), its weights stored in it too, so that their gradients have
    the weights' strides (which DDP's gradient buckets expect).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, kernel_size: int = 3,
                 num_classes: int = 0):
        pad = kernel_size // 2
        super().__init__(
            nn.Conv2d(in_channels, width, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1),
            nn.ReLU(inplace=True),
            zero_init(nn.Conv2d(width, out_channels, kernel_size, padding=pad)),
        )
        self.num_classes = num_classes
        self.class_bias = nn.Parameter(torch.zeros(num_classes, width)) if num_classes else None
        self.set_memory_format(memory_format_for(in_channels))

    def set_memory_format(self, memory_format: torch.memory_format) -> None:
        self.memory_format = memory_format
        self.to(memory_format=memory_format)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        if self.class_bias is None:
            return super().forward(x)
        first, *rest = self
        h = first(x) + class_channel_bias(labels, self.class_bias).to(x.dtype)
        for layer in rest:
            h = layer(h)
        return h
