"""bf16 autocast against fp32 on this CPU: one training step of each model of a preset, in turn.

    python benchmarks/cpu_precision.py [--preset mnist] [--batch 64] [--rounds 15] [--threads 2]

A step is forward, backward and a fused Adam update on one batch of dequantized images, under
bf16 autocast (``train.precision=bf16``: the convolutional nets in bf16, the flows' arithmetic
and every log-density in fp32, see ``fvae/fp32.py``) or without it; the two alternate, step by
step, so that both see the same machine load, and the median of ``--rounds`` steps is reported.
It times; it does not compare losses: on freshly built models every net that autocast runs in
bf16 ends in a zero-initialised layer, so the two losses would agree exactly whatever bf16's
rounding (docs/engine.md gives the bf16 loss on trained weights). Whether bf16 trains *as well*
at equal time is what ``compare_peers.py --models fvae --set train.precision=bf16`` measures. Prints a table and
writes benchmarks/results/cpu_precision.{md,json}.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import fvae
from fvae.presets import MODEL_PRESETS, train_config

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, markdown_table, parser, write_report  # noqa: E402
from timing import alternating_medians, train_step  # noqa: E402


def steps_of(model: fvae.LatentFlowModel, x: torch.Tensor) -> dict[str, callable]:
    """A training step of ``model`` on ``x`` in fp32 and one in bf16 autocast (two optimizers, one model)."""
    def loss(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.loss(x).float().mean() / model.num_dims

    return {"fp32": train_step(lambda: loss(False), model.parameters(), 1e-5),
            "bf16": train_step(lambda: loss(True), model.parameters(), 1e-5)}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--preset", default="mnist", choices=tuple(MODEL_PRESETS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for kind in ("fvae", "glow", "vae"):
        torch.manual_seed(0)
        model = fvae.build_model(kind, args.preset)
        x = (torch.randint(0, 256, (args.batch, *model.image_shape)) + torch.rand(args.batch, *model.image_shape)) / 256
        with torch.no_grad():
            model.loss(x)  # ActNorm's data-dependent initialisation, in fp32
        steps = steps_of(model, x)
        for fn in steps.values():  # warm-up: oneDNN picks its kernels
            fn()
        medians = alternating_medians(steps, args.rounds)
        rows.append({"model": kind, "batch": args.batch, "fp32_step_s": round(medians["fp32"], 4),
                     "bf16_step_s": round(medians["bf16"], 4), "speedup": round(medians["fp32"] / medians["bf16"], 3),
                     "train_batch": train_config(kind, args.preset).batch_size})
        print(rows[-1], flush=True)
    table = markdown_table(rows, ["model", "batch", "fp32_step_s", "bf16_step_s", "speedup"],
                           headers={"fp32_step_s": "fp32 step (s)", "bf16_step_s": "bf16 step (s)",
                                    "speedup": "fp32 / bf16"})
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = {f for line in cpu.splitlines() if line.startswith("flags") for f in line.split(":")[1].split()}
    note = (f"preset {args.preset}, {args.threads} threads, median of {args.rounds} alternating steps; "
            f"CPU bf16 flags: {', '.join(sorted(f for f in flags if 'bf16' in f or 'amx' in f)) or 'none'}")
    write_report(args.out, "cpu_precision", f"`{command_line()}`\n\n{table}\n\n{note}\n",
                 {"rows": rows, "preset": args.preset, "threads": args.threads})


if __name__ == "__main__":
    main()
