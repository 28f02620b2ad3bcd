"""What a model of a config costs before it is built: its parameters and the activations one training
step keeps, measured on PyTorch's ``meta`` device (shapes without storage, in a fraction of a second),
and checked against the memory of the machine that would run it.

A config whose every width is in range can still ask for a model of hundreds of GiB (a few wide
levels, many steps, large images); :func:`check_budget` refuses it with one line naming the size and
the fields that set it, before any memory is taken.
"""
from __future__ import annotations

import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fvae.config import ModelConfig
from fvae.errors import ConfigError
from fvae.flows.actnorm import ActNorm

# the copies of the weights training holds: weights, gradients, Adam's two moments (and the EMA's)
TRAINING_COPIES = 4
# the fields that set a model's size, by kind
_ENCODER = ("encoder_levels", "encoder_blocks", "encoder_hidden")
_FLOW = ("flow_levels", "flow_steps", "flow_widths")
SIZE_FIELDS = {"fvae": _ENCODER + _FLOW, "composite": _ENCODER + _FLOW + ("inner_flow_steps",),
               "vae": _ENCODER + ("latent_dim",), "glow": _FLOW}


class _OutputBytes(TorchDispatchMode):
    """Sums the bytes of every tensor the ops inside it return: an upper bound on what a forward
    pass keeps for its backward pass."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and not t._is_view():
                self.total += t.numel() * t.element_size()
        return out


def _meta_model(config: ModelConfig):
    from fvae.models import model_from_config  # the package that imports this module

    with torch.device("meta"):
        model = model_from_config(config)
    for module in model.modules():
        if isinstance(module, ActNorm):
            module._known_initialized = True  # a meta tensor has no value to initialise from
    return model


def activation_bytes(model, config: ModelConfig, batch_size: int) -> int | None:
    """The bytes of every tensor one training forward pass of ``model`` (built on the meta device from
    ``config``) at ``batch_size`` makes: an upper bound on what it keeps for the backward pass; None
    where the model's forward pass cannot run on the meta device."""
    model.prior.check_labels = lambda labels, batch: None  # it reads label values, which meta has not
    x = torch.empty(batch_size, *config.image_shape, device="meta")
    labels = (torch.zeros(batch_size, dtype=torch.long, device="meta") if config.num_classes else
              torch.zeros(batch_size, config.num_context, device="meta") if config.num_context else None)
    counter = _OutputBytes()
    try:
        with counter:
            model.loss_terms(x, labels)
    except (NotImplementedError, RuntimeError):
        return None
    return counter.total


def available_bytes(device: torch.device | str | None = None) -> int:
    """The memory of ``device``: a GPU's own, else this machine's."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_budget(config: ModelConfig, batch_size: int | None = None, device: torch.device | str | None = None,
                 copies: int = 1) -> None:
    """Refuse (:class:`ConfigError`) a model whose ``copies`` of its weights (:data:`TRAINING_COPIES` in
    training, one more with an EMA) and, with ``batch_size``, one step's activations exceed the memory
    of ``device``."""
    have = available_bytes(device)
    model = _meta_model(config)
    parameters = sum(p.numel() for p in model.parameters())
    activations = None
    if 4 * parameters * copies <= have and batch_size is not None:
        activations = activation_bytes(model, config, batch_size)
    need = 4 * parameters * copies + (activations or 0)
    if need <= have:
        return
    fields = ", ".join(f"model.{name}={getattr(config, name)}" for name in ("image_shape", "pad_to",
                                                                             *SIZE_FIELDS[config.kind])
                       if getattr(config, name) is not None)
    step = f" and {activations / 2**30:.1f} GiB of activations at train.batch_size={batch_size}" if activations else ""
    raise ConfigError(f"this {config.kind} would need about {need / 2**30:.1f} GiB ({parameters:,} parameters"
                      f"{step}), more than the {have / 2**30:.1f} GiB of this machine; set by {fields}")
