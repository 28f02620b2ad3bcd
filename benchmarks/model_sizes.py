"""Parameter counts of every preset, and the time of one training step of the mnist presets.

    python benchmarks/model_sizes.py [--batch 64] [--steps 20] [--threads 2]

Prints a table and writes benchmarks/results/model_sizes.{json,md}. A training step is
forward, backward and an Adam update on a batch of dequantized images, after warm-up
steps; the median of ``--steps`` timed steps is reported.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

import fvae
from fvae.presets import MODEL_PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, markdown_table, parser, write_report  # noqa: E402
from timing import seconds, train_step  # noqa: E402


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
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
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
    table = markdown_table(
        [{**r, "total": r["parameters"]["total"] / 1e6,
          "parts": ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in r["parameters"].items() if k != "total")}
         for r in rows],
        ["preset", "model", "total", "parts", "train_step_s", "train_images_per_s"], formats={"total": ".3f"},
        headers={"total": "parameters (M)", "train_step_s": "train step (s)", "train_images_per_s": "images/s"})
    write_report(args.out, "model_sizes", f"`{command_line()}` (torch {torch.__version__}, {args.threads} threads, "
                 f"batch {args.batch})\n\n{table}", {"rows": rows, "batch": args.batch, "threads": args.threads})


if __name__ == "__main__":
    main()
