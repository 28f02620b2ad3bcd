"""The FLOP/s a training step of each preset sustains, against this machine's fp32 matmul FLOP/s.

    python benchmarks/flops.py [--threads 2] [--presets mnist cifar10 celebahq64]

FLOPs of one step (forward and backward) are counted by torch.utils.flop_counter (matrix
multiplies and convolutions); the step (with an Adam update) is timed, median of --steps.
The reference is a 2048x2048 fp32 matrix multiply timed in the same run. Writes
benchmarks/results/flops.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import fvae

RESULTS = Path(__file__).with_name("results")
BATCH = {"mnist": 64, "cifar10": 16, "celebahq64": 4, "celebahq128": 2}


def matmul_flops_per_s(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times)


def step_flops_and_time(model: fvae.LatentFlowModel, batch: int, steps: int) -> tuple[float, float]:
    x = torch.rand(batch, *model.image_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

    def step():
        loss = model.loss(x).mean() / model.num_dims
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    with FlopCounterMode(display=False) as counter:
        loss = model.loss(x).mean() / model.num_dims
        loss.backward()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return counter.get_total_flops(), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["mnist", "cifar10", "celebahq64"])
    parser.add_argument("--models", nargs="+", default=["fvae", "vae", "glow"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_flops_per_s()
    rows = []
    for preset in args.presets:
        for kind in args.models:
            model = fvae.build_model(kind, preset)
            flops, seconds = step_flops_and_time(model, BATCH[preset], args.steps)
            rows.append({"preset": preset, "model": kind, "batch": BATCH[preset], "gflop_per_step": flops / 1e9,
                         "step_s": seconds, "gflop_per_s": flops / seconds / 1e9,
                         "fraction_of_matmul": flops / seconds / peak})
            print(json.dumps(rows[-1]), flush=True)
    lines = [f"fp32 matmul (2048x2048): {peak / 1e9:.1f} GFLOP/s", "",
             "| preset | model | batch | GFLOP/step | step (s) | GFLOP/s | of matmul |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['preset']} | {r['model']} | {r['batch']} | {r['gflop_per_step']:.2f} | {r['step_s']:.3f} | "
              f"{r['gflop_per_s']:.1f} | {100 * r['fraction_of_matmul']:.0f}% |" for r in rows]
    command = "python benchmarks/flops.py " + " ".join(sys.argv[1:])
    text = f"`{command}` ({args.threads} threads, torch {torch.__version__})\n\n" + "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "flops.json").write_text(json.dumps({"command": command, "matmul_flops_per_s": peak,
                                                    "rows": rows}, indent=2))
    (RESULTS / "flops.md").write_text(text)


if __name__ == "__main__":
    main()
