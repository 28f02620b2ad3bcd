"""Parameter counts of every preset, and the time of one training step of the mnist presets.

    python benchmarks/model_sizes.py [--batch 64] [--steps 20] [--threads 2]

Prints a table and writes benchmarks/results/model_sizes.{json,md}. A training step is
forward, backward and an Adam update on a batch of dequantized images, after warm-up
steps; the median of ``--steps`` timed steps is reported.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

import fvae
from fvae.presets import MODEL_PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from timing import seconds, train_step  # noqa: E402

RESULTS = Path(__file__).with_name("results")


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Total and per top-level part (E = inner/encoder, F = flow, G = decoder)."""
    parts = {"total": sum(p.numel() for p in model.parameters())}
    for name, child in model.named_children():
        parts[name] = sum(p.numel() for p in child.parameters())
    return parts


def time_train_step(model: fvae.LatentFlowModel, batch: int, steps: int, warmup: int = 3) -> float:
    x = torch.rand(batch, *model.image_shape)
    step = train_step(lambda: model.loss(x).mean() / model.num_dims, model.parameters(), 1e-4)
    return statistics.median(seconds(step, warmup + steps)[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for preset, kinds in MODEL_PRESETS.items():
        for kind in kinds:
            model = fvae.build_model(kind, preset)
            row = {"preset": preset, "model": kind, "parameters": parameter_counts(model)}
            if preset == "mnist":
                seconds = time_train_step(model, args.batch, args.steps)
                row["train_step_s"] = round(seconds, 4)
                row["train_images_per_s"] = round(args.batch / seconds, 1)
            rows.append(row)
            del model
    header = "| preset | model | parameters | parts | train step (s) | images/s |\n|---|---|---:|---|---:|---:|"
    lines = [header]
    for r in rows:
        parts = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in r["parameters"].items() if k != "total")
        lines.append(f"| {r['preset']} | {r['model']} | {r['parameters']['total'] / 1e6:.3f}M | {parts} | "
                     f"{r.get('train_step_s', '')} | {r.get('train_images_per_s', '')} |")
    table = "\n".join(lines)
    print(table)
    meta = {"command": "python benchmarks/model_sizes.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items()), "torch": torch.__version__, "threads": args.threads,
            "batch": args.batch, "cpu": platform.processor() or platform.machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "model_sizes.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (RESULTS / "model_sizes.md").write_text(f"`{meta['command']}` (torch {meta['torch']}, "
                                            f"{args.threads} threads)\n\n{table}\n")


if __name__ == "__main__":
    main()
