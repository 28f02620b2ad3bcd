"""``fvae train``: the run's config from preset, ``--config``, flags and overrides, then training."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fvae.config import RunConfig, apply_overrides
from fvae.presets import run_config


# the shell's codes for a process ended by a signal (128 + its number), once the run has checkpointed
SIGNAL_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def _merge(base: RunConfig, yaml_path: str | None) -> RunConfig:
    """``base`` with the sections of a YAML config file laid over it, field by field."""
    if not yaml_path:
        return base
    from fvae.config import ConfigError, read_yaml

    loaded = read_yaml(yaml_path)
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {yaml_path} must be a mapping of sections (model, train, data), "
                          f"got {type(loaded).__name__}")
    merged = base.to_dict()
    for section, values in loaded.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return RunConfig.from_dict(merged)


def resolve_train_config(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """Preset (or the run's own config when resuming), then ``--config``, flags, overrides."""
    out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume and (out / "config.yaml").exists():
        config = RunConfig.load_yaml(out / "config.yaml")
    else:
        config = run_config(args.model, args.preset)
    config = _merge(config, args.config)
    flags = []
    if args.data is not None:
        flags.append(f"data.name={args.data}")
    if args.data_root is not None:
        flags.append(f"data.root={args.data_root}")
    if args.offline:
        flags.append("data.download=false")
    for name in ("max_steps", "max_time", "seed", "batch_size", "lr", "ema_decay"):
        if getattr(args, name) is not None:
            flags.append(f"train.{name}={getattr(args, name)}")
    return apply_overrides(config, flags + list(args.overrides)), out


def cmd_train(args: argparse.Namespace) -> int:
    from fvae.training.pipeline import train

    config, out = resolve_train_config(args)
    _, summary = train(config=config, out=out, resume=args.resume, progress=not args.no_progress)
    if not summary:
        return 0
    print(json.dumps(summary, indent=2))
    if summary["stopped_by"] in ("max_steps", "max_time"):
        return 0
    print(f"stopped by {summary['stopped_by']}; resume with: fvae train --resume --out {out}", file=sys.stderr)
    return SIGNAL_EXIT_CODES.get(summary["stopped_by"], 1)
