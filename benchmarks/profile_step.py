"""Where a training step of a preset's model spends its time on this CPU (``torch.profiler``).

    python benchmarks/profile_step.py [--preset mnist] [--kind fvae] [--batch 64] [--steps 5] [--threads 2]

A step is forward, backward and a fused Adam update on one batch of dequantized images, as in
training. After three warm-up steps (ActNorm's initialisation, oneDNN's kernel choice) the
median of ``--steps`` timed steps is reported, then ``--steps`` more run under the profiler:
the operators by their own CPU time, and the most expensive (operator, input shapes) pairs,
which say which level of the model the time goes to (a map of 16x16 is F's finest level, or E
and G). Prints the tables and writes benchmarks/results/profile_step.{md,json}.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import fvae
from fvae.presets import MODEL_PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, markdown_table, parser, write_report  # noqa: E402
from timing import seconds, train_step  # noqa: E402


def operator_rows(events, total_us: float, limit: int, shapes: bool) -> list[dict]:
    """The ``limit`` costliest profiler averages as rows: name (and input shapes), calls, ms, share."""
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:limit]
    return [{"operator": e.key, **({"input_shapes": str(e.input_shapes)[:90]} if shapes else {}),
             "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 1),
             "share": round(e.self_cpu_time_total / total_us, 3)} for e in ranked]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--preset", default="mnist", choices=tuple(MODEL_PRESETS))
    p.add_argument("--kind", default="fvae", choices=("fvae", "composite", "vae", "glow"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rows", type=int, default=12, help="rows of each table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = fvae.build_model(args.kind, args.preset)
    x = (torch.randint(0, 256, (args.batch, *model.image_shape)) + torch.rand(args.batch, *model.image_shape)) / 256
    step = train_step(lambda: model.loss(x).mean() / model.num_dims, model.parameters(), 1e-5)
    for _ in range(3):
        step()
    step_s = statistics.median(seconds(step, args.steps))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    by_name = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in by_name)
    rows = operator_rows(by_name, total_us, args.rows, shapes=False)
    shaped = operator_rows(prof.key_averages(group_by_input_shape=True), total_us, args.rows, shapes=True)
    head = (f"`{command_line()}`\n\n{args.kind} of preset {args.preset}, batch {args.batch}, {args.threads} threads: "
            f"{step_s:.4f} s a step (median of {args.steps}), {args.batch / step_s:.0f} images/s; "
            f"profiled over {args.steps} more steps ({total_us / 1e6:.3f} s of own CPU time)")
    text = (f"{head}\n\n{markdown_table(rows, ['operator', 'calls', 'self_ms', 'share'])}\n\n"
            f"{markdown_table(shaped, ['operator', 'input_shapes', 'calls', 'self_ms', 'share'])}\n")
    write_report(args.out, "profile_step", text,
                 {"preset": args.preset, "kind": args.kind, "batch": args.batch, "threads": args.threads,
                  "step_s": round(step_s, 4), "operators": rows, "operators_by_shape": shaped})


if __name__ == "__main__":
    main()
