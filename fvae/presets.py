"""Named configurations: one per dataset size, with matching f-VAE, VAE and Glow models.

``celebahq64`` and ``celebahq128`` follow the authors' code (bojone/flow): E and G of
3 squeeze levels x 12 residual blocks as wide as the squeezed channels, F of 4 levels x
12 steps of ActNorm, a fixed channel shuffle and additive coupling of width 256, Adam
1e-4, batch 32: 96M parameters (E 4.7M, G 4.7M, F 86M), as the authors report. Where fvae
departs from it: ActNorm initialised from data, GroupNorm for BatchNorm in E and G, no
tanh after G. ``model.mixing=conv1x1_lu`` swaps the shuffle for invertible 1x1
convolutions (+37M parameters at these widths). The Glow presets follow Kingma &
Dhariwal (K = 32, width 512).
"""
from __future__ import annotations

import dataclasses

from fvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig

_MNIST = dict(image_shape=(1, 28, 28))
_CIFAR = dict(image_shape=(3, 32, 32))
_PAPER_E = dict(encoder_levels=3, encoder_blocks=12, encoder_hidden=None)
_PAPER_F = dict(flow_levels=4, flow_steps=12, flow_width=256, coupling="additive", mixing="shuffle")
_PAPER_TRAIN = TrainConfig(batch_size=32, lr=1e-4, max_steps=100_000, sample_every=1000, checkpoint_every=1000)

MODEL_PRESETS: dict[str, dict[str, ModelConfig]] = {
    "mnist": {
        "fvae": ModelConfig("fvae", **_MNIST, encoder_levels=1, encoder_blocks=2, encoder_hidden=64,
                            flow_levels=2, flow_steps=4, flow_width=64),
        "composite": ModelConfig("composite", **_MNIST, encoder_levels=1, encoder_blocks=2, encoder_hidden=64,
                                 flow_levels=2, flow_steps=4, flow_width=64, inner_flow_steps=2),
        "vae": ModelConfig("vae", **_MNIST, encoder_levels=2, encoder_blocks=2, encoder_hidden=64, latent_dim=32),
        "glow": ModelConfig("glow", **_MNIST, data_scale=1.0, flow_levels=2, flow_steps=12, flow_width=96),
    },
    "cifar10": {
        "fvae": ModelConfig("fvae", **_CIFAR, encoder_levels=2, encoder_blocks=4, encoder_hidden=128,
                            flow_levels=3, flow_steps=8, flow_width=256),
        "composite": ModelConfig("composite", **_CIFAR, encoder_levels=2, encoder_blocks=4, encoder_hidden=128,
                                 flow_levels=3, flow_steps=8, flow_width=256, inner_flow_steps=4),
        "vae": ModelConfig("vae", **_CIFAR, encoder_levels=3, encoder_blocks=4, encoder_hidden=128, latent_dim=128),
        "glow": ModelConfig("glow", **_CIFAR, data_scale=1.0, flow_levels=3, flow_steps=32, flow_width=512),
    },
    "celebahq64": {
        "fvae": ModelConfig("fvae", image_shape=(3, 64, 64), **_PAPER_E, **_PAPER_F),
        "composite": ModelConfig("composite", image_shape=(3, 64, 64), **_PAPER_E, **_PAPER_F, inner_flow_steps=4),
        "vae": ModelConfig("vae", image_shape=(3, 64, 64), **_PAPER_E, latent_dim=256),
        "glow": ModelConfig("glow", image_shape=(3, 64, 64), data_scale=1.0, flow_levels=4, flow_steps=32,
                            flow_width=512),
    },
    "celebahq128": {
        "fvae": ModelConfig("fvae", image_shape=(3, 128, 128), **_PAPER_E, **_PAPER_F),
        "composite": ModelConfig("composite", image_shape=(3, 128, 128), **_PAPER_E, **_PAPER_F,
                                 inner_flow_steps=4),
        "vae": ModelConfig("vae", image_shape=(3, 128, 128), **_PAPER_E, latent_dim=512),
        "glow": ModelConfig("glow", image_shape=(3, 128, 128), data_scale=1.0, flow_levels=5, flow_steps=32,
                            flow_width=512),
    },
}

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "mnist": TrainConfig(batch_size=64, lr=1e-3, max_steps=1500, score_samples=1000),
    "cifar10": TrainConfig(batch_size=64, lr=5e-4, max_steps=100_000, sample_every=1000, checkpoint_every=1000),
    "celebahq64": _PAPER_TRAIN,
    "celebahq128": _PAPER_TRAIN,
}

DATA_PRESETS: dict[str, DataConfig] = {
    "mnist": DataConfig("embedded"),
    "cifar10": DataConfig("cifar10"),
    "celebahq64": DataConfig("celeba"),
    "celebahq128": DataConfig("celeba"),
}

PRESETS = tuple(MODEL_PRESETS)


def model_config(kind: str, preset: str = "mnist", **overrides) -> ModelConfig:
    """The ``kind`` model of ``preset``, with fields replaced by ``overrides``."""
    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {PRESETS}")
    if kind not in MODEL_PRESETS[preset]:
        raise ValueError(f"unknown model {kind!r}: expected one of {tuple(MODEL_PRESETS[preset])}")
    return dataclasses.replace(MODEL_PRESETS[preset][kind], **overrides)


def run_config(kind: str = "fvae", preset: str = "mnist") -> RunConfig:
    """The full run configuration of a preset: model, training and data."""
    return RunConfig(model=model_config(kind, preset), train=TRAIN_PRESETS[preset],
                     data=DATA_PRESETS[preset], preset=preset)
