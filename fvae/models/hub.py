"""Trained models as Hugging Face folders: ``config.json`` + ``model.safetensors`` + a model card.

    model.save_pretrained("my-fvae")                  # or push_to_hub="user/my-fvae"
    model = fvae.from_pretrained("my-fvae")           # a local folder, or a Hub id where online

Every model inherits :class:`HubMixin`, a thin layer over ``huggingface_hub``'s
``PyTorchModelHubMixin`` (which brings ``push_to_hub`` and Hub downloads); fvae writes the
config itself (the model config, its kind, the fvae version) so that a folder made for another
model kind or a newer fvae is refused with a clear error rather than loaded wrongly. The model
class of a folder is the subclass whose ``kind`` is the folder's, found among the classes that
inherit the mixin, so this module never imports the models.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download

from fvae.config import ConfigError, ModelConfig, as_plain_dict, upgrade_model_fields
from fvae.errors import PretrainedError
from fvae.models.budget import check_budget
from fvae.models.weights import WeightsError, load_weights
from fvae.version import __version__ as VERSION

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# the models that ship with fvae, loadable offline by name: fvae.from_pretrained("fvae-mnist")
SHIPPED = Path(__file__).with_name("pretrained")


def shipped_models() -> tuple[str, ...]:
    """The names of the models that ship with fvae (``fvae-mnist``, ``glow-fashion-mnist``, ...)."""
    if not SHIPPED.is_dir():
        return ()
    return tuple(sorted(p.name for p in SHIPPED.iterdir() if (p / CONFIG_FILE).exists()))


def pretrained_folder(name_or_path: str | Path) -> Path | None:
    """The folder of a shipped model's name, or a local folder written by ``save_pretrained``; else None."""
    if str(name_or_path) in shipped_models():
        return SHIPPED / str(name_or_path)
    path = Path(name_or_path).expanduser()
    return path if (path / CONFIG_FILE).exists() and (path / WEIGHTS_FILE).exists() else None



def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def _model_card(config: ModelConfig, metrics: dict[str, Any] | None, preset: str | None) -> str:
    rows = "".join(f"| {k} | {v:.4g} |\n" if isinstance(v, float) else f"| {k} | {v} |\n"
                   for k, v in (metrics or {}).items())
    numbers = f"\n## Evaluation\n\n| metric | value |\n|---|---|\n{rows}" if rows else ""
    return f"""---
library_name: fvae
tags: [fvae, f-vae, normalizing-flow, vae, generative-model]
---

# fvae `{config.kind}` model{f" (preset `{preset}`)" if preset else ""}

An f-VAE family model (Su & Wu, 2018, *f-VAEs: Improve VAEs with Conditional Flows*) trained
with fvae: kind `{config.kind}`, images of shape {tuple(config.image_shape)}, decoder
likelihood `{config.likelihood}`.
{numbers}
## How to load

```python
import fvae

model = fvae.from_pretrained("path/or/hub-id")   # a plain torch.nn.Module
images = model.sample(64, temperature=0.7)        # (64, {", ".join(map(str, config.image_shape))}) in [0, 1]
nats = model.loss(x)                              # x in [0, 1): the negative ELBO per image
```

`config.json` holds the model configuration (`fvae.ModelConfig`), `model.safetensors` the weights.
"""


class HubMixin(PyTorchModelHubMixin, library_name="fvae", tags=["fvae", "f-vae", "normalizing-flow"]):
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for fvae's models.

    The class using it has a ``config: ModelConfig`` attribute, is built as ``cls(config)`` and
    names its ``kind`` (``ModelConfig.kind``); a base class has ``kind = None``.
    """

    kind: str | None = None

    def save_pretrained(self, save_directory: str | Path, *, metrics: dict[str, Any] | None = None,
                        preset: str | None = None, **kwargs) -> str | None:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` (a model card with
        ``metrics`` when given) to ``save_directory``; ``push_to_hub=True, repo_id=...`` also uploads."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "README.md").write_text(_model_card(self.config, metrics, preset))
        config = {"fvae_version": VERSION, "model": as_plain_dict(self.config)}
        return super().save_pretrained(folder, config=config, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir=None,
                         force_download: bool = False, local_files_only: bool = False, token=None,
                         map_location: str = "cpu", config: dict | None = None, **_):
        model_config = read_model_config(config, model_id)
        model_class = class_of_kind(model_config.kind)
        if not issubclass(model_class, cls):
            raise PretrainedError(f"{model_id} holds a {model_config.kind!r} model ({model_class.__name__}), "
                                  f"not a {cls.__name__}; load it with fvae.from_pretrained")
        check_budget(model_config)  # a config.json may ask for a model no machine holds
        model = model_class(model_config)
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_FILE
        else:
            weights = Path(hf_hub_download(model_id, WEIGHTS_FILE, revision=revision, cache_dir=cache_dir,
                                           force_download=force_download, local_files_only=local_files_only,
                                           token=token))
        if not weights.exists():
            raise PretrainedError(f"{model_id} has no {WEIGHTS_FILE}")
        try:
            load_weights(model, weights)
        except WeightsError as error:
            raise PretrainedError(str(error)) from error
        return model.to(map_location).eval()


def class_of_kind(kind: str) -> type[HubMixin]:
    """The model class whose ``kind`` is ``kind``, among every class that inherits :class:`HubMixin`."""
    pending, seen = list(HubMixin.__subclasses__()), set()
    while pending:
        candidate = pending.pop()
        if candidate in seen:
            continue
        seen.add(candidate)
        if getattr(candidate, "kind", None) == kind:
            return candidate
        pending.extend(candidate.__subclasses__())
    raise PretrainedError(f"no model class of kind {kind!r} is defined")


def read_model_config(config: dict | None, source: str) -> ModelConfig:
    """The :class:`ModelConfig` of a pretrained folder's ``config.json``, checking its fvae version."""
    if not isinstance(config, dict) or "model" not in config or "fvae_version" not in config:
        raise PretrainedError(f"{source} has no fvae {CONFIG_FILE} (with 'fvae_version' and 'model'); "
                              f"was it saved by fvae's save_pretrained?")
    made_by = str(config["fvae_version"])
    if _version_tuple(made_by)[:2] > _version_tuple(VERSION)[:2]:
        raise PretrainedError(f"{source} was saved by fvae {made_by}, newer than this fvae {VERSION}; "
                              f"upgrade fvae to load it")
    try:
        return ModelConfig(**upgrade_model_fields(config["model"]))
    except (TypeError, ConfigError) as error:
        raise PretrainedError(f"{source}: {CONFIG_FILE} does not describe an fvae model: {error}") from error


def from_pretrained(model_id: str | Path, **kwargs) -> torch.nn.Module:
    """The model saved in a folder by ``save_pretrained``, shipped with fvae under that name
    (:func:`shipped_models`: ``"fvae-mnist"``, offline), or on the Hub under ``model_id``, of
    whatever kind it is, in eval mode on the CPU (``map_location`` to change)."""
    model_id = str(pretrained_folder(model_id) or model_id)
    if os.path.isdir(model_id):
        path = Path(model_id) / CONFIG_FILE
        if not path.exists():
            raise PretrainedError(f"{model_id} has no {CONFIG_FILE}: not a folder written by save_pretrained")
        config_file = str(path)
    else:
        config_file = hf_hub_download(model_id, CONFIG_FILE, **{k: v for k, v in kwargs.items()
                                                                 if k in ("revision", "cache_dir", "token",
                                                                          "local_files_only")})
    try:
        config = json.loads(Path(config_file).read_text())
    except ValueError as error:
        raise PretrainedError(f"{config_file} is not valid JSON: {error}") from error
    kind = read_model_config(config, model_id).kind
    return class_of_kind(kind).from_pretrained(model_id, **kwargs)
