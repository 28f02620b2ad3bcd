"""fvae: f-VAEs, variational autoencoders with conditional-flow posteriors (Su & Wu, 2018).

    import fvae
    model = fvae.build_model("fvae", preset="mnist")     # also "vae", "glow", "composite"
    nats = model.loss(x)                                   # (B,) negative ELBO, x in [0, 1)
    bpd = fvae.bits_per_dim(nats, x[0].numel())
    model, summary = fvae.train("fvae", preset="mnist", data=my_uint8_images, max_steps=500)
    model.save_pretrained("my-fvae"); model = fvae.from_pretrained("my-fvae")
    model = fvae.from_pretrained("fvae-mnist")             # shipped, offline: fvae.shipped_models()
"""
from __future__ import annotations

from fvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from fvae.models import FVAE, VAE, CompositeFVAE, Glow, LatentFlowModel, from_pretrained, model_from_config
from fvae.models.hub import shipped_models
from fvae.presets import PRESETS, model_config
from fvae.scoring.metrics import bits_per_dim
from fvae.training.pipeline import train
from fvae.version import __version__


def build_model(kind: str = "fvae", preset: str = "mnist", **overrides) -> LatentFlowModel:
    """The ``kind`` model ("fvae", "vae", "glow", "composite") of a named preset;
    ``overrides`` replace fields of its :class:`ModelConfig`."""
    return model_from_config(model_config(kind, preset, **overrides))


__all__ = [
    "FVAE", "VAE", "CompositeFVAE", "Glow", "LatentFlowModel", "ModelConfig", "TrainConfig", "DataConfig",
    "RunConfig", "PRESETS", "__version__", "bits_per_dim", "build_model", "from_pretrained", "model_config",
    "model_from_config", "shipped_models", "train",
]
