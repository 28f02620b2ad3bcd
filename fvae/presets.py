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

from fvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig, merge_model_fields, upgrade_model_fields
from fvae.errors import InputError

_MNIST = dict(image_shape=(1, 28, 28))
_CIFAR = dict(image_shape=(3, 32, 32))
# the mnist f-VAEs: the digits padded to 32x32 so that the multi-scale F reaches a global top, as
# in the authors' layout: E squeezes once (4x16x16), F has five levels (16x16, 8x8, 4x4, 2x2, a
# 64-d 1x1 top; fewer steps at the three smallest, narrower nets at the two finest, wider at the
# two smallest), the discretized decoder, sigmas starting near 6 bins (what won at equal time:
# docs/experiments.md); class-conditional (model.num_classes), their coupling nets take the class
# too (README, Class-conditional models)
_MNIST_E = dict(pad_to=32, encoder_levels=1, encoder_blocks=2, encoder_hidden=64, likelihood="discretized",
                sigma1_init=0.05, sigma2_init=0.05)
_MNIST_F = dict(flow_levels=5, flow_steps=(8, 8, 4, 4, 4), flow_widths=(64, 64, 96, 128, 128), class_couplings=True)
_PAPER_E = dict(encoder_levels=3, encoder_blocks=12, encoder_hidden=None)
_PAPER_F = dict(flow_levels=4, flow_steps=12, flow_widths=256, coupling="additive", mixing="shuffle")
_PAPER_TRAIN = TrainConfig(batch_size=32, lr=1e-4, max_steps=100_000, sample_every=1000, checkpoint_every=1000)

MODEL_PRESETS: dict[str, dict[str, ModelConfig]] = {
    "mnist": {
        "fvae": ModelConfig("fvae", **_MNIST, **_MNIST_E, **_MNIST_F),
        "composite": ModelConfig("composite", **_MNIST, **_MNIST_E, **_MNIST_F, inner_flow_steps=2, inner_flow_width=96),
        "vae": ModelConfig("vae", **_MNIST, encoder_levels=2, encoder_blocks=2, encoder_hidden=64, latent_dim=32,
                           likelihood="discretized", sigma2_init=0.05),
        # Glow on the same padded images, down to a 2x2 top (what won at equal time: docs/experiments.md)
        "glow": ModelConfig("glow", **_MNIST, data_scale=1.0, pad_to=32, flow_levels=4, flow_steps=12, flow_widths=96,
                            class_couplings=True),
    },
    # the digits' models on clothes: same shape, same architecture (README, Presets)
    "fashion-mnist": {},
    "cifar10": {
        "fvae": ModelConfig("fvae", **_CIFAR, encoder_levels=2, encoder_blocks=4, encoder_hidden=128,
                            flow_levels=3, flow_steps=8, flow_widths=256),
        "composite": ModelConfig("composite", **_CIFAR, encoder_levels=2, encoder_blocks=4, encoder_hidden=128,
                                 flow_levels=3, flow_steps=8, flow_widths=256, inner_flow_steps=4),
        "vae": ModelConfig("vae", **_CIFAR, encoder_levels=3, encoder_blocks=4, encoder_hidden=128, latent_dim=128),
        "glow": ModelConfig("glow", **_CIFAR, data_scale=1.0, flow_levels=3, flow_steps=32, flow_widths=512),
    },
    "celebahq64": {
        "fvae": ModelConfig("fvae", image_shape=(3, 64, 64), **_PAPER_E, **_PAPER_F),
        "composite": ModelConfig("composite", image_shape=(3, 64, 64), **_PAPER_E, **_PAPER_F, inner_flow_steps=4),
        "vae": ModelConfig("vae", image_shape=(3, 64, 64), **_PAPER_E, latent_dim=256),
        "glow": ModelConfig("glow", image_shape=(3, 64, 64), data_scale=1.0, flow_levels=4, flow_steps=32,
                            flow_widths=512),
    },
    "celebahq128": {
        "fvae": ModelConfig("fvae", image_shape=(3, 128, 128), **_PAPER_E, **_PAPER_F),
        "composite": ModelConfig("composite", image_shape=(3, 128, 128), **_PAPER_E, **_PAPER_F,
                                 inner_flow_steps=4),
        "vae": ModelConfig("vae", image_shape=(3, 128, 128), **_PAPER_E, latent_dim=512),
        "glow": ModelConfig("glow", image_shape=(3, 128, 128), data_scale=1.0, flow_levels=5, flow_steps=32,
                            flow_widths=512),
    },
}

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # 1,380 steps: the README's default run within 10 minutes on 2 cores without AVX-512; samples at
    # T = 0.65: nearly as readable as at 0.6, sharper and more varied (docs/experiments.md, fvae 0.8)
    "mnist": TrainConfig(batch_size=64, lr=2e-3, max_steps=1380, ema_decay=0.999, score_samples=1000,
                         score_temperature=0.65, temperatures=(1.0, 0.65)),
    # clothes lose their texture, and the f-VAE most of its clarity, below T = 1 (docs/results-v0.3.md, Fashion-MNIST)
    "fashion-mnist": TrainConfig(batch_size=64, lr=2e-3, max_steps=1800, ema_decay=0.999, score_samples=1000,
                                 score_temperature=1.0, temperatures=(1.0, 0.8)),
    "cifar10": TrainConfig(batch_size=64, lr=5e-4, max_steps=100_000, sample_every=1000, checkpoint_every=1000),
    "celebahq64": _PAPER_TRAIN,
    "celebahq128": _PAPER_TRAIN,
}

DATA_PRESETS: dict[str, DataConfig] = {
    "mnist": DataConfig("embedded"),
    "fashion-mnist": DataConfig("fashion-mnist"),
    "cifar10": DataConfig("cifar10"),
    "celebahq64": DataConfig("celeba"),
    "celebahq128": DataConfig("celeba"),
}

MODEL_PRESETS["fashion-mnist"] = dict(MODEL_PRESETS["mnist"])
PRESETS = tuple(MODEL_PRESETS)


def model_config(kind: str, preset: str = "mnist", **overrides) -> ModelConfig:
    """The ``kind`` model of ``preset``, with fields replaced by ``overrides`` (``flow_steps=2``: two
    steps at every level; the names of earlier versions too: :func:`~fvae.config.upgrade_model_fields`)."""
    if preset not in MODEL_PRESETS:
        raise InputError(f"unknown preset {preset!r}: expected one of {PRESETS}")
    if kind not in MODEL_PRESETS[preset]:
        raise InputError(f"unknown model {kind!r}: expected one of {tuple(MODEL_PRESETS[preset])}")
    base = MODEL_PRESETS[preset][kind]
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return ModelConfig(**upgrade_model_fields(merge_model_fields(fields, overrides)))


# where a model kind trains best with other settings than its preset's (measured on the embedded digits)
KIND_TRAIN: dict[tuple[str, str], dict] = {
    ("mnist", "vae"): dict(lr=1e-3, score_temperature=1.0, temperatures=(1.0, 0.8)),
    ("mnist", "glow"): dict(lr=1e-3, score_temperature=1.0, temperatures=(1.0, 0.7)),
    ("fashion-mnist", "vae"): dict(lr=1e-3),
    ("fashion-mnist", "glow"): dict(lr=1e-3),
}


def train_config(kind: str, preset: str = "mnist") -> TrainConfig:
    """The training config of the ``kind`` model of ``preset``."""
    return dataclasses.replace(TRAIN_PRESETS[preset], **KIND_TRAIN.get((preset, kind), {}))


def run_config(kind: str = "fvae", preset: str = "mnist") -> RunConfig:
    """The full run configuration of a preset: model, training and data."""
    return RunConfig(model=model_config(kind, preset), train=train_config(kind, preset),
                     data=DATA_PRESETS[preset], preset=preset)
