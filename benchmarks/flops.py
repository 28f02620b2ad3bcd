"""The FLOP/s a training step of each preset sustains, against this machine's fp32 matmul FLOP/s.

    python benchmarks/flops.py [--threads 2] [--presets mnist cifar10 celebahq64]

FLOPs of one step (forward and backward) are counted by torch.utils.flop_counter (matrix
multiplies and convolutions); the step (with an Adam update) is timed, median of --steps.
The reference is the best fp32 matrix multiply (torch.matmul, n = 1024, 2048, 4096) timed
in the same run; a 3x3 convolution of 512 channels is timed beside it, since on some CPUs
(e.g. AMD with MKL's matmul) oneDNN's convolutions run faster than matmul, and a step can
then exceed 100% of the matmul reference. Writes benchmarks/results/flops.{md,json}.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import fvae

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, markdown_table, parser, write_report  # noqa: E402
from timing import best_seconds, seconds, train_step  # noqa: E402

BATCH = {"mnist": 64, "cifar10": 16, "celebahq64": 4, "celebahq128": 2}


def matmul_flops_per_s(sizes: tuple[int, ...] = (1024, 2048, 4096)) -> float:
    """Best fp32 FLOP/s of an ``n x n`` matrix multiply over ``sizes`` (``2 n^3`` FLOPs each)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        best = max(best, 2 * n ** 3 / best_seconds(lambda: a @ b))
    return best


def conv_flops_per_s(batch: int = 16, channels: int = 512, size: int = 8) -> float:
    """fp32 FLOP/s of a 3x3 convolution, ``channels`` in and out, ``size x size`` pixels."""
    x, w = torch.randn(batch, channels, size, size), torch.randn(channels, channels, 3, 3)
    flops = 2 * batch * size * size * channels * channels * 9
    return flops / best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1))


def step_flops_and_time(model: fvae.LatentFlowModel, batch: int, steps: int) -> tuple[float, float]:
    """The FLOPs of one forward and backward pass and the median seconds of a training step."""
    x = torch.rand(batch, *model.image_shape)
    step = train_step(lambda: model.loss(x).mean() / model.num_dims, model.parameters(), lr=1e-5)
    step()
    with FlopCounterMode(display=False) as counter:
        (model.loss(x).mean() / model.num_dims).backward()
    return counter.get_total_flops(), statistics.median(seconds(step, steps))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--presets", nargs="+", default=["mnist", "cifar10", "celebahq64"])
    p.add_argument("--models", nargs="+", default=["fvae", "vae", "glow"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak, conv_peak = matmul_flops_per_s(), conv_flops_per_s()
    rows = []
    for preset in args.presets:
        for kind in args.models:
            model = fvae.build_model(kind, preset)
            flops, seconds = step_flops_and_time(model, BATCH[preset], args.steps)
            rows.append({"preset": preset, "model": kind, "batch": BATCH[preset], "gflop_per_step": flops / 1e9,
                         "step_s": seconds, "gflop_per_s": flops / seconds / 1e9,
                         "fraction_of_matmul": flops / seconds / peak,
                         "fraction_of_conv": flops / seconds / conv_peak})
            print(json.dumps(rows[-1]), flush=True)
    percent = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    table = markdown_table(rows, ["preset", "model", "batch", "gflop_per_step", "step_s", "gflop_per_s",
                                  "fraction_of_matmul", "fraction_of_conv"],
                           formats={"gflop_per_step": ".2f", "step_s": ".3f", "gflop_per_s": ".1f",
                                    "fraction_of_matmul": percent, "fraction_of_conv": percent},
                           headers={"gflop_per_step": "GFLOP/step", "step_s": "step (s)", "gflop_per_s": "GFLOP/s",
                                    "fraction_of_matmul": "of matmul", "fraction_of_conv": "of conv"})
    write_report(args.out, "flops", f"`{command_line()}` ({args.threads} threads, torch {torch.__version__})\n\n"
                 f"fp32 matmul (best of n = 1024, 2048, 4096): {peak / 1e9:.1f} GFLOP/s; fp32 3x3 conv (512 channels, "
                 f"8x8, batch 16): {conv_peak / 1e9:.1f} GFLOP/s\n\n{table}",
                 {"matmul_flops_per_s": peak, "conv_flops_per_s": conv_peak, "rows": rows})


if __name__ == "__main__":
    main()
