"""ActNorm (Kingma & Dhariwal, 2018): a per-channel affine map with data-dependent initialisation."""
from __future__ import annotations

import torch
from torch import nn

from fvae.flows.base import FlowBlock
from fvae.fp32 import full_precision


class ActNorm(FlowBlock):
    """``y = (x + bias) * exp(log_scale)`` per channel; ``logdet = H * W * sum(log_scale)``.

    The first batch seen (``x``: ``(B, C, H, W)``) sets ``bias = -mean`` and
    ``log_scale = -log(std)`` per channel, so that the output starts with zero mean and
    unit variance. ``initialized`` is a buffer: it is saved and restored with the weights.
    Once it has been read true, a Python flag stands in for it, so that a compiled model branches
    on no tensor (no graph break per ActNorm); loading a state dict sets the flag from the loaded
    buffer.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = eps
        self._known_initialized = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``bias`` and ``log_scale`` from the statistics of the batch ``x``."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    @property
    def ready(self) -> bool:
        """Whether a forward pass has seen this block initialised (no tensor is read)."""
        return self._known_initialized

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = bool(self.initialized)  # read once here, never in a forward pass

    @full_precision
    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._known_initialized:
            if not self.initialized:
                self.initialize(x)
            self._known_initialized = True
        y = (x + self.bias) * torch.exp(self.log_scale)
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return y, logdet.expand(x.shape[0])

    @full_precision
    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias
