"""``fvae eval`` (bits/dim and the sample score of a run, into eval.json) and ``fvae score``
(the sample score of any images)."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torchvision

import fvae
from fvae.commands.runs import evaluation_split, load_run_model
from fvae.config import DataConfig
from fvae.data import dataset_key, load_dataset, load_images
from fvae.scoring.evaluate import evaluate
from fvae.scoring.score import scorer_for


def cmd_eval(args: argparse.Namespace) -> int:
    started = time.time()
    model, config, checkpoint, run_dir = load_run_model(args)
    test_set = evaluation_split(config, args)
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
    for key in ("fid", "precision", "recall", "recognizable", "sharpness", "fid_inception", "num_images", "nonfinite",
                "temperature", "features", "recognizable_rule"):
        if key in score:
            value = score[key]
            print(f"  {key:<17} {value:.4g}" if isinstance(value, float) else f"  {key:<17} {value}")


def cmd_score(args: argparse.Namespace) -> int:
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
