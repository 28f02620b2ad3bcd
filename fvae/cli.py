"""The ``fvae`` command: ``fvae train``, and what to do with a trained run.

Every command takes ``--help``. Multi-process training: ``torchrun --nproc_per_node N
--no-python fvae train ...``.
"""
from __future__ import annotations

import argparse
import os
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


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train an f-VAE, a VAE or a Glow",
        description="Train a model. With no arguments: the f-VAE 'mnist' preset on the embedded MNIST-5k digits "
                    "(offline), a few CPU minutes, leaving samples_T*.png, checkpoints/, tensorboard/ and "
                    "metrics.jsonl in the run folder. Config precedence: preset < --config < flags < overrides; "
                    "an option not given keeps the preset's value (see README, Presets).")
    p.add_argument("overrides", nargs="*", metavar="section.field=value",
                   help="override any config field, e.g. model.flow_steps=8 train.lr=3e-4 (values parsed as YAML)")
    p.add_argument("--model", choices=MODEL_KINDS, default="fvae", help="which model of the preset (default: fvae)")
    p.add_argument("--preset", choices=PRESETS, default="mnist", help="named architecture and training config (default: mnist)")
    p.add_argument("--config", help="a YAML file with model/train/data sections (as the run's config.yaml)")
    p.add_argument("--data", help="'embedded', mnist, fashion-mnist, cifar10, celeba, or an image folder path "
                                  "(default: the preset's; embedded for mnist)")
    p.add_argument("--data-root", help="where torchvision datasets live, downloaded there when absent and online "
                                       "(default: ~/.cache/fvae)")
    p.add_argument("--offline", action="store_true", help="never download datasets")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (mnist: 1500)")
    p.add_argument("--max-time", type=parse_duration, help="stop after this much training time (e.g. 600, 10m, 2h; default: none)")
    p.add_argument("--seed", type=int, help="random seed: initialisation, data order, noise (default: 0)")
    p.add_argument("--batch-size", type=int, help="images per process and step (mnist: 64)")
    p.add_argument("--lr", type=float, help="Adam learning rate (mnist: 1e-3)")
    p.add_argument("--ema", dest="ema_decay", type=float, help="keep an EMA of the weights with this decay, used for samples and evaluation "
                                                                   "(default: none)")
    p.add_argument("--out", help="run folder (default runs/MODEL-PRESET-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from fvae.pipeline import train

    config, out = resolve_train_config(args)
    _, summary = train(config=config, out=out, resume=args.resume, progress=not args.no_progress)
    if summary:
        print(json.dumps(summary, indent=2))
        if summary["stopped_by"] not in ("max_steps", "max_time"):
            print(f"stopped by {summary['stopped_by']}; resume with: fvae train --resume --out {out}",
                  file=sys.stderr)
    return 0


# --- using a trained run ---------------------------------------------------------------------

def _load(args: argparse.Namespace):
    """The model of ``args.path`` (a run or checkpoint folder) and the run folder it belongs to."""
    import torch

    from fvae.checkpoint import load_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, config, checkpoint = load_model(args.path, use_ema=not args.no_ema, device=device)
    if getattr(args, "compile", False):  # the hot paths of sampling and of the bounds
        model.generate = torch.compile(model.generate)
        model.log_weights = torch.compile(model.log_weights)
    torch.manual_seed(args.seed)
    return model, config, checkpoint, checkpoint.parent.parent


def _test_set(config: RunConfig, args: argparse.Namespace):
    from fvae.data import load_dataset

    data = config.data
    if getattr(args, "data_root", None):
        data = apply_overrides(config, [f"data.root={args.data_root}"]).data
    return load_dataset(data, "test", config.model.image_shape)


def _test_images(config: RunConfig, args: argparse.Namespace, count: int, device) -> "torch.Tensor":
    """``count`` dequantized test images in an order drawn from ``args.seed`` (all classes, not the first rows)."""
    import torch

    from fvae.data import dequantize

    test_set = _test_set(config, args)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(test_set), generator=g).tolist()
    return dequantize(torch.stack([test_set[order[i % len(order)]][0] for i in range(count)]), g).to(device)


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    import platform

    import torch
    import torchvision

    import fvae
    from fvae.data import dataset_key, load_dataset
    from fvae.evaluate import evaluate
    from fvae.quality import scorer_for

    started = time.time()
    model, config, checkpoint, run_dir = _load(args)
    test_set = _test_set(config, args)
    scorer = None
    if args.score_samples:
        try:
            train_set = None if dataset_key(config.data) == "embedded" else load_dataset(
                config.data, "train", config.model.image_shape)
            scorer = scorer_for(dataset_key(config.data), train_set, test_set, config.model.image_shape[0],
                                inception=args.inception)
        except ValueError as error:
            print(f"fvae eval: no sample score: {error}", file=sys.stderr)
    temperature = config.train.score_temperature if args.temperature is None else args.temperature
    metrics = evaluate(model, test_set, num_samples=args.num_samples, batch_size=args.batch_size,
                       max_images=args.max_images, scorer=scorer, score_samples=args.score_samples,
                       temperature=temperature, seed=args.seed)
    record = {
        "checkpoint": str(checkpoint), "step": int(checkpoint.name.split("-")[-1]), "model": config.model.kind,
        "preset": config.preset, "dataset": config.data.name, "num_samples": args.num_samples,
        "metrics": metrics, "command": " ".join(["fvae", *sys.argv[1:]]),
        "versions": {"fvae": fvae.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "python": platform.python_version()},
        "seconds": round(time.time() - started, 2),
    }
    out = Path(args.out) if args.out else run_dir / "eval.json"
    out.write_text(json.dumps(record, indent=2))
    with open(run_dir / "evals.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    width = max(len(k) for k in metrics)
    print(f"{checkpoint} ({config.model.kind}, {metrics['num_images']} test images, K={args.num_samples})")
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    print(f"wrote {out}")
    return 0


def print_score(score: dict, title: str) -> None:
    """The sample score as a small table."""
    print(title)
    for key in ("fid", "precision", "recall", "recognizable", "fid_inception", "num_images", "nonfinite",
                "temperature", "features"):
        if key in score:
            value = score[key]
            print(f"  {key:<13} {value:.4g}" if isinstance(value, float) else f"  {key:<13} {value}")


def cmd_score(args: argparse.Namespace) -> int:
    import json

    from fvae.config import DataConfig
    from fvae.data import dataset_key, load_dataset, load_images
    from fvae.quality import scorer_for

    data = DataConfig(args.data, args.data_root, download=not args.offline)
    first = load_images(args.path)
    channels = first.shape[1]
    shape = tuple(first.shape[1:])
    test_set = load_dataset(data, "test", shape)
    train_set = None if dataset_key(data) == "embedded" else load_dataset(data, "train", shape)
    scorer = scorer_for(dataset_key(data), train_set, test_set, channels, inception=args.inception)
    score = scorer.score(first)
    score = {"path": str(args.path), "dataset": args.data, **score}
    print_score(score, f"{args.path}: scored against the {args.data} test split ({len(test_set)} images)")
    if args.json:
        Path(args.json).write_text(json.dumps(score, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from torchvision.utils import save_image

    model, config, _, run_dir = _load(args)
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    for t in args.temperatures or config.train.temperatures:
        images = model.sample(args.num, temperature=t)
        path = out / f"samples_T{t:g}.png"
        save_image(images, path, nrow=args.nrow)
        print(f"wrote {path}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from torchvision.utils import save_image

    from fvae.pictures import reconstruction_grid

    model, config, _, run_dir = _load(args)
    x = _test_images(config, args, args.num, next(model.parameters()).device)
    path = Path(args.out) if args.out else run_dir / "reconstructions.png"
    save_image(reconstruction_grid(model, x), path, nrow=8)
    print(f"wrote {path} (rows: inputs, then their reconstructions)")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from torchvision.utils import save_image

    from fvae.pictures import interpolation_rows, interpolation_square

    model, config, _, run_dir = _load(args)
    device = next(model.parameters()).device
    if args.images == 4:
        grid = interpolation_square(model, _test_images(config, args, 4, device), args.steps)
    else:
        x = _test_images(config, args, 2 * args.rows, device)
        grid = interpolation_rows(model, x[: args.rows], x[args.rows:], args.steps)
    path = Path(args.out) if args.out else run_dir / f"interpolation_{args.images}.png"
    save_image(grid, path, nrow=args.steps)
    print(f"wrote {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import json

    model, config, checkpoint, run_dir = _load(args)
    metrics = {"step": int(checkpoint.name.split("-")[-1])}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        metrics |= {k: v for k, v in summary.items() if k in ("test_bpd", "fid", "precision", "recall", "recognizable")}
    if (run_dir / "eval.json").exists():
        evaluation = json.loads((run_dir / "eval.json").read_text())["metrics"]
        metrics |= {k: v for k, v in evaluation.items() if isinstance(v, (int, float))}
    out = Path(args.out) if args.out else run_dir / "pretrained"
    model.cpu().save_pretrained(out, metrics=metrics, preset=config.preset)
    print(f"wrote {out} ({config.model.kind}, {'EMA' if not args.no_ema else 'raw'} weights of {checkpoint}); "
          f"load it with fvae.from_pretrained({str(out)!r})")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    import time as clock

    from fvae.config import DataConfig
    from fvae.prepared import prepare
    from fvae.presets import MODEL_PRESETS

    shape = MODEL_PRESETS[args.preset]["fvae"].image_shape
    started = clock.perf_counter()
    info = prepare(DataConfig(args.data, args.data_root, download=not args.offline), shape, args.out,
                   workers=args.workers)
    print(f"wrote {args.out}: {info['counts']['train']} training and {info['counts']['test']} test images of "
          f"shape {tuple(shape)} in {clock.perf_counter() - started:.1f} s; train with --data {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from fvae.compare import comparison_rows, load_run, markdown_table, plot_curves

    runs = [load_run(r) for r in args.runs]
    rows = comparison_rows(runs)
    table = markdown_table(rows)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    plot_curves(runs, out / "comparison.png")
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.json'}, {out / 'comparison.png'}")
    return 0


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends an option's default to its help, unless the help names it already or it has none."""

    def _get_help_string(self, action):
        if "default:" in (action.help or "") or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _run_parser(sub, name: str, help: str, run) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, formatter_class=DefaultsHelpFormatter)
    p.add_argument("path", metavar="RUN", help="a run folder made by fvae train (its newest checkpoint) "
                                                "or a checkpoint folder")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even where EMA weights were saved")
    p.add_argument("--out", help="where to write (default: in the run folder)")
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvae", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)

    p = _run_parser(sub, "eval", "bits/dim (ELBO, importance-weighted, exact), reconstruction error and the "
                                 "sample score on the test split; writes eval.json", cmd_eval)
    p.add_argument("--num-samples", type=int, default=100, help="K of the importance-weighted bound (0: skip it)")
    p.add_argument("--batch-size", type=int, default=64, help="test images per batch")
    p.add_argument("--max-images", type=int, help="evaluate on the first N test images only")
    p.add_argument("--score-samples", "--fid-samples", type=int, default=1000,
                   help="samples for the sample score: FID, precision, recall, recognizable (0: none)")
    p.add_argument("--temperature", type=float, help="prior standard deviation of the scored samples "
                                                     "(default: the run's train.score_temperature)")
    p.add_argument("--inception", action="store_true", help="also Inception FID (needs torchmetrics[image] "
                                                            "and its weights)")
    p.add_argument("--compile", action="store_true", help="torch.compile the bounds and the decoder "
                                                          "(pays off for large K and many images)")
    p.add_argument("--data-root", help="where the run's torchvision dataset lives, if moved")

    p = _run_parser(sub, "sample", "write a PNG grid of samples per temperature", cmd_sample)
    p.add_argument("--num", type=int, default=64, help="samples per temperature")
    p.add_argument("--temperatures", type=float, nargs="+", help="prior standard deviations (default: the run's "
                                                                 "train.temperatures)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder (pays off for many samples)")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row")

    p = _run_parser(sub, "reconstruct", "test images beside their reconstructions decode(encode(x))", cmd_reconstruct)
    p.add_argument("--num", type=int, default=32, help="test images")
    p.add_argument("--data-root", help="where the run's torchvision dataset lives, if moved")

    p = _run_parser(sub, "interpolate", "interpolate in z between test images, rows of --steps", cmd_interpolate)
    p.add_argument("--images", type=int, choices=(2, 4), default=2,
                   help="2: one pair a row; 4: a square between four corners")
    p.add_argument("--rows", type=int, default=8, help="pairs, with --images 2")
    p.add_argument("--steps", type=int, default=9, help="images a row")
    p.add_argument("--data-root", help="where the run's torchvision dataset lives, if moved")

    _run_parser(sub, "export", "write a run's model as a Hugging Face folder (config.json, model.safetensors, "
                               "README.md): EMA weights where kept", cmd_export)

    p = sub.add_parser(
        "score", formatter_class=DefaultsHelpFormatter,
        help="score images against a dataset's test split: FID, precision, recall, recognizable",
        description="Score a set of images (any generator's) against the test split of a dataset, in the "
                    "features of a judge trained on its labelled training split: FID, k-NN precision and "
                    "recall, and the share of images the judge recognizes as one class (see README, Sample score).")
    p.add_argument("path", metavar="PATH", help="a folder of image files, or a .npy/.npz/.pt array of shape "
                                                "(N, H, W) or (N, C, H, W), uint8 or float in [0, 1]")
    p.add_argument("--data", default="embedded", help="the dataset whose test split is the reference")
    p.add_argument("--data-root", help="where torchvision datasets live (default: ~/.cache/fvae)")
    p.add_argument("--offline", action="store_true", help="never download datasets")
    p.add_argument("--inception", action="store_true", help="also Inception FID (needs torchmetrics[image] "
                                                            "and its weights)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "prepare", formatter_class=DefaultsHelpFormatter,
        help="crop and resize a dataset once into memory-mapped arrays, for a data path that keeps up with a GPU",
        description="Decode, crop and resize every image of a dataset (an image folder or a torchvision name) "
                    "once, to the preset's size, into uint8 arrays that training reads memory-mapped: "
                    "fvae train --data OUT.")
    p.add_argument("data", help="an image folder path, or mnist, fashion-mnist, cifar10, celeba")
    p.add_argument("--preset", choices=PRESETS, default="celebahq64", help="whose image size to prepare for")
    p.add_argument("--out", required=True, help="the folder to write (must not exist)")
    p.add_argument("--data-root", help="where torchvision datasets live (default: ~/.cache/fvae)")
    p.add_argument("--offline", action="store_true", help="never download datasets")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("compare", help="table and plots of bits/dim and FID against steps and time for runs",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders made by fvae train")
    p.add_argument("--out", default="comparison", help="folder for comparison.{md,json,png}")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors a user can cause end in one line on stderr: exit code 2 for bad
    input (config, data, checkpoints, a run folder in use), 1 for a run that failed."""
    from fvae.checkpoint import CheckpointError, CheckpointWriteError
    from fvae.data import DataError
    from fvae.quality import ScoreUnavailable
    from fvae.runlock import RunLocked
    from fvae.trainer import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointWriteError, TrainingDiverged) as error:
        print(f"fvae {args.command}: error: {error}", file=sys.stderr)
        return 1
    except (DataError, CheckpointError, ScoreUnavailable, RunLocked, FileExistsError, FileNotFoundError,
            ValueError) as error:
        print(f"fvae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not the user's input: one line, the traceback on request
        if os.environ.get("FVAE_TRACEBACK"):
            raise
        print(f"fvae {args.command}: internal error: {type(error).__name__}: {error} "
              f"(set FVAE_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
