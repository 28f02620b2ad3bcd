"""``fvae eval`` (bits/dim and the sample score of a run, into eval.json; with ``--data``, its
likelihoods on another dataset against its own: the out-of-distribution test) and ``fvae score``
(the sample score of any images)."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import fvae
from fvae.commands.runs import checkpoint_step, evaluation_split, load_run_model, output_path, writable_folder
from fvae.config import DataConfig
from fvae.data import dataset_key, load_dataset, load_images, load_labels
from fvae.errors import InputError
from fvae.scoring.evaluate import evaluate, per_image_bits_per_dim
from fvae.scoring.metrics import auroc
from fvae.scoring.score import CLASS_SCORE_KEYS, SCORE_KEYS, scorer_for
from fvae.training.run_log import append_record


def cmd_eval(args: argparse.Namespace) -> int:
    if args.data:
        return cmd_eval_other_data(args)
    started = time.time()
    model, config, checkpoint, run_dir = load_run_model(args)
    out = output_path(args.out, run_dir, "eval.json", (".json",))
    log_dir = evaluations_log(checkpoint, run_dir, out)
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
    record = eval_record(checkpoint, config, args, metrics, config.data.name, started)
    write_record(record, out, log_dir)
    print_metrics(metrics, f"{checkpoint} ({config.model.kind}, {metrics['num_images']} test images, "
                           f"K={args.num_samples})")
    return 0


def eval_record(checkpoint: Path, config, args: argparse.Namespace, metrics: dict, dataset: str,
                started: float) -> dict:
    """What eval.json holds: the checkpoint, the model, the dataset scored, every number, the command,
    the versions and the time taken."""
    return {
        "checkpoint": str(checkpoint), "step": checkpoint_step(checkpoint), "model": config.model.kind,
        "preset": config.preset, "dataset": dataset, "num_samples": args.num_samples,
        "metrics": metrics, "command": args.command_line,
        "versions": {"fvae": fvae.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "python": platform.python_version()},
        "seconds": round(time.time() - started, 2),
    }


def evaluations_log(checkpoint: Path, run_dir: Path, out: Path) -> Path:
    """The folder of ``evals.jsonl``: the run folder of a trained run, else that of ``out``; checked
    to be writable before any work."""
    return writable_folder(run_dir if checkpoint_step(checkpoint) is not None else out.parent, "the run folder")


def write_record(record: dict, out: Path, log_dir: Path) -> None:
    """``out`` (eval.json, or the path asked for) and a line of ``log_dir/evals.jsonl``."""
    out.write_text(json.dumps(record, indent=2))
    append_record(log_dir / "evals.jsonl", record)
    print(f"wrote {out}")


def print_metrics(metrics: dict, title: str) -> None:
    width = max(len(k) for k in metrics)
    print(title)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def file_stem(dataset: str) -> str:
    """A dataset name or folder as a file name: ``fashion-mnist``, ``/data/my pets`` -> ``my-pets``."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(dataset).name) or "data"


def cmd_eval_other_data(args: argparse.Namespace) -> int:
    """The model's bits/dim on the test split of ``--data`` beside those on its own (Nalisnick et al.,
    2019: flows trained on clothes give digits the higher likelihood): each image's tightest bound
    as ``bpd-NAME.npy`` for both splits, their histograms in one PNG, and the AUROC of bits/dim as an
    out-of-distribution score (how often an image of ``--data`` gets more bits than one of the own
    test split), in ``eval-NAME.json``."""
    started = time.time()
    model, config, checkpoint, run_dir = load_run_model(args)
    if args.data == config.data.name:
        raise InputError(f"--data {args.data} is the run's own dataset; name another one of the same image shape")
    out = output_path(args.out, run_dir, f"eval-{file_stem(args.data)}.json", (".json",))
    log_dir = evaluations_log(checkpoint, run_dir, out)
    other = DataConfig(args.data, args.data_root, download=not args.offline)
    splits = {config.data.name: load_dataset(config.data, "test", config.model.image_shape),
              args.data: load_dataset(other, "test", config.model.image_shape)}
    per_image, metrics = {}, {}
    for name, dataset in splits.items():
        bound, per_image[name] = per_image_bits_per_dim(model, dataset, args.num_samples, args.batch_size,
                                                        args.max_images, args.seed, progress=True)
        metrics[name] = {"bound": bound, "bpd": per_image[name].mean().item(),
                         "bpd_median": per_image[name].median().item(), "num_images": len(per_image[name])}
    own, name = config.data.name, args.data
    out_dir = out.parent  # the per-image bits/dim and the histogram go beside the record
    for dataset, values in per_image.items():
        np.save(out_dir / f"bpd-{file_stem(dataset)}.npy", values.numpy())
    histogram(per_image, out_dir / f"bpd-{file_stem(own)}-vs-{file_stem(name)}.png",
              f"{config.model.kind} trained on {file_stem(own)}")
    result = {"in_distribution": own, "out_of_distribution": name, "in_bpd": metrics[own]["bpd"],
              "out_bpd": metrics[name]["bpd"], "auroc": auroc(per_image[own], per_image[name]), "splits": metrics}
    record = eval_record(checkpoint, config, args, result, name, started)
    write_record(record, out, log_dir)
    print(f"{checkpoint} ({config.model.kind}): {metrics[own]['bound']} bits/dim {result['in_bpd']:.4g} on {own} "
          f"(its own test split), {result['out_bpd']:.4g} on {name}; AUROC of bits/dim as an "
          f"out-of-distribution score {result['auroc']:.3f}")
    return 0


def histogram(per_image: dict[str, torch.Tensor], path: Path, title: str) -> None:
    """The per-image bits/dim of each dataset, one histogram each on shared bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = torch.cat(list(per_image.values()))
    low, high = values.quantile(0.001).item(), values.quantile(0.999).item()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, bpd in per_image.items():
        ax.hist(bpd.clamp(low, high).numpy(), bins=60, range=(low, high), alpha=0.55, density=True,
                label=f"{file_stem(name)} (mean {bpd.mean().item():.2f})")
    ax.set_xlabel("bits/dim (each image's tightest bound)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_score(score: dict, title: str) -> None:
    """The sample score as a small table."""
    print(title)
    for key in (*SCORE_KEYS, *CLASS_SCORE_KEYS, "fid_inception", "num_images", "nonfinite",
                "temperature", "features", "recognizable_rule"):
        if key in score:
            value = score[key]
            print(f"  {key:<17} {value:.4g}" if isinstance(value, float) else f"  {key:<17} {value}")


def cmd_score(args: argparse.Namespace) -> int:
    data = DataConfig(args.data, args.data_root, download=not args.offline)
    json_path = output_path(args.json, Path.cwd(), "score.json", (".json",)) if args.json else None
    first = load_images(args.path)
    channels = first.shape[1]
    shape = tuple(first.shape[1:])
    test_set = load_dataset(data, "test", shape)
    train_set = None if dataset_key(data) == "embedded" else load_dataset(data, "train", shape)
    scorer = scorer_for(dataset_key(data), train_set, test_set, channels, inception=args.inception)
    labels = load_labels(args.labels, len(first)) if args.labels else None
    score = scorer.score(first, labels)
    score = {"path": str(args.path), "dataset": args.data, **score}
    print_score(score, f"{args.path}: scored against the {args.data} test split ({len(test_set)} images)")
    if json_path is not None:
        json_path.write_text(json.dumps(score, indent=2))
        print(f"wrote {json_path}")
    return 0
