"""The models: the f-VAE, its composite variant, and its two special cases (VAE, Glow)."""
from __future__ import annotations

from fvae.config import ModelConfig
from fvae.models.base import LatentFlowModel, Posterior
from fvae.models.fvae import FVAE, CompositeFVAE
from fvae.models.glow import Glow
from fvae.models.hub import PretrainedError, from_pretrained
from fvae.models.vae import VAE

MODELS: dict[str, type[LatentFlowModel]] = {cls.kind: cls for cls in (FVAE, CompositeFVAE, VAE, Glow)}


def model_from_config(config: ModelConfig) -> LatentFlowModel:
    """Build the model that ``config.kind`` names."""
    return MODELS[config.kind](config)


__all__ = ["FVAE", "VAE", "CompositeFVAE", "Glow", "LatentFlowModel", "MODELS", "Posterior", "PretrainedError",
           "from_pretrained", "model_from_config"]
