"""The ``fvae`` command: ``fvae train``, and what to do with a trained run.

Every command takes ``--help``. Multi-process training: ``torchrun --nproc_per_node N
--no-python fvae train ...``.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from fvae.config import MODEL_KINDS, RunConfig, apply_overrides
from fvae.presets import PRESETS, run_config


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"5m"``, ``"1.5h"`` -> seconds."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 300, 300s, 5m, 1.5h)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def _merge(base: RunConfig, yaml_path: str | None) -> RunConfig:
    if not yaml_path:
        return base
    import yaml

    loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
    merged = base.to_dict()
    for section, values in loaded.items():
        if isinstance(values, dict) and section in merged:
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


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train an f-VAE, a VAE or a Glow",
        description="Train a model. With no arguments: the f-VAE 'mnist' preset on the embedded MNIST-5k digits "
                    "(offline), a few CPU minutes, leaving samples_T*.png, checkpoints/, tensorboard/ and "
                    "metrics.jsonl in the run folder. Config precedence: preset < --config < flags < overrides.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="section.field=value",
                   help="override any config field, e.g. model.flow_steps=8 train.lr=3e-4 (values parsed as YAML)")
    p.add_argument("--model", choices=MODEL_KINDS, default="fvae", help="which model of the preset")
    p.add_argument("--preset", choices=PRESETS, default="mnist", help="named architecture and training config")
    p.add_argument("--config", help="a YAML file with model/train/data sections (as the run's config.yaml)")
    p.add_argument("--data", help="'embedded', mnist, fashion-mnist, cifar10, celeba, or an image folder path "
                                  "(default: the preset's)")
    p.add_argument("--data-root", help="where torchvision datasets live (downloaded there when absent and online)")
    p.add_argument("--offline", action="store_true", help="never download datasets")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--max-time", type=parse_duration, help="stop after this wall time (e.g. 600, 10m, 2h)")
    p.add_argument("--seed", type=int, help="random seed (data order, noise, initialisation)")
    p.add_argument("--batch-size", type=int, help="images per process and step")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--ema", dest="ema_decay", type=float, help="keep an EMA of the weights with this decay")
    p.add_argument("--out", help="run folder (default runs/MODEL-PRESET-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from fvae.train import train

    config, out = resolve_train_config(args)
    summary = train(config, out, resume=args.resume, progress=not args.no_progress)
    if summary:
        print(json.dumps(summary, indent=2))
        if summary["stopped_by"]:
            print(f"stopped by {summary['stopped_by']}; resume with: fvae train --resume --out {out}",
                  file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvae", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fvae.checkpoint import CheckpointError
    from fvae.data import DataError
    from fvae.train import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DataError, CheckpointError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"fvae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"fvae {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
