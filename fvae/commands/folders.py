"""Commands that write a folder for other tools: ``fvae export`` (a Hugging Face folder of a run)
and ``fvae prepare`` (a dataset cropped and resized once into memory-mapped arrays)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fvae.commands.runs import checkpoint_step, load_run_model, writable_folder
from fvae.config import DataConfig
from fvae.data import load_dataset
from fvae.data.prepared import prepare
from fvae.presets import MODEL_PRESETS
from fvae.scoring.score import CLASS_SCORE_KEYS, SCORE_KEYS


def cmd_export(args: argparse.Namespace) -> int:
    model, config, checkpoint, run_dir = load_run_model(args)
    metrics = {"step": checkpoint_step(checkpoint)}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        # numbers only: the summaries of fvae 0.13.0 held the training precision ("bf16") as "precision"
        metrics |= {k: v for k, v in summary.items()
                    if k in ("test_bpd", *SCORE_KEYS, *CLASS_SCORE_KEYS) and isinstance(v, (int, float))}
    if (run_dir / "eval.json").exists():
        evaluation = json.loads((run_dir / "eval.json").read_text())["metrics"]
        metrics |= {k: v for k, v in evaluation.items() if isinstance(v, (int, float))}
    out = writable_folder(Path(args.out) if args.out else run_dir / "pretrained")
    model.cpu().save_pretrained(out, metrics=metrics, preset=config.preset)
    config.save_yaml(out / "config.yaml")  # the run's config: temperatures, dataset, for fvae sample, eval ...
    print(f"wrote {out} ({config.model.kind}, {'EMA' if not args.no_ema else 'raw'} weights of {checkpoint}); "
          f"load it with fvae.from_pretrained({str(out)!r})")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    shape = MODEL_PRESETS[args.preset]["fvae"].image_shape
    started = time.perf_counter()
    data = DataConfig(args.data, args.data_root, download=not args.offline)
    splits = {split: load_dataset(data, split, shape) for split in ("train", "test")}
    info = prepare(splits, args.data, shape, args.out, workers=args.workers)
    print(f"wrote {args.out}: {info['counts']['train']} training and {info['counts']['test']} test images of "
          f"shape {tuple(shape)} in {time.perf_counter() - started:.1f} s; train with --data {args.out}")
    return 0
