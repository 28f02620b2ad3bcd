"""What ``torch.compile`` (``train.compile=true``) buys a training step on this machine.

    python benchmarks/compile_speed.py [--preset mnist] [--batch 64] [--rounds 30] [--threads 2]

For each model kind of the preset: the seconds the first compiled step takes (compilation),
then the median seconds of an eager and a compiled training step (forward, backward, fused
Adam), timed in turn so that both see the same load, and the number of steps after which the
compiled run has caught up (compilation over the time saved per step). Prints a table and
writes benchmarks/results/compile_speed.{json,md}.
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch

import fvae

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, markdown_table, parser, write_report  # noqa: E402
from timing import alternating_medians, train_step  # noqa: E402


def measure(kind: str, preset: str, batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    x = torch.rand(batch, *fvae.build_model(kind, preset=preset).image_shape)
    steps = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = fvae.build_model(kind, preset=preset).train()
        forward = torch.compile(model) if name == "compiled" else model
        steps[name] = train_step(lambda f=forward, m=model: f(x)["loss"].mean() / m.num_dims, model.parameters(), 1e-5)
    steps["eager"]()
    start = time.perf_counter()
    steps["compiled"]()
    first = time.perf_counter() - start
    medians = alternating_medians(steps, rounds)
    saved = medians["eager"] - medians["compiled"]
    return {"kind": kind, "preset": preset, "batch": batch, "first_compiled_step_s": round(first, 1),
            "eager_step_s": round(medians["eager"], 4), "compiled_step_s": round(medians["compiled"], 4),
            "speedup": round(medians["eager"] / medians["compiled"], 3),
            "break_even_steps": round(first / saved) if saved > 0 else None}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--preset", default="mnist")
    p.add_argument("--kinds", nargs="+", default=["fvae", "glow"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(kind, args.preset, args.batch, args.rounds) for kind in args.kinds]
    write_report(args.out, "compile_speed", f"`{command_line()}` (torch {torch.__version__}, {args.threads} threads, "
                 f"{platform.machine()})\n\n" + markdown_table(rows, list(rows[0])), {"rows": rows})


if __name__ == "__main__":
    main()
