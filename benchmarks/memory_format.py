"""A training step of each preset with its nets in NCHW, channels-last, and fvae's choice
(``fvae.models.nets.memory_format_for``: channels-last up to 16 input channels, NCHW above).

    python benchmarks/memory_format.py [--threads 2] [--rounds 4] [--models mnist:fvae ...]

The three variants of a model are built from the same seed and timed in alternation, one
step each in turn (forward, backward, fused Adam; batch 64, 16 and 4 for mnist, cifar10 and
celebahq64, as in flops.py); medians are reported. Writes
benchmarks/results/memory_format.{md,json}.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import fvae
from fvae.models.nets import set_memory_format

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, markdown_table, parser, write_report  # noqa: E402
from timing import alternating_medians, train_step  # noqa: E402

BATCH = {"mnist": 64, "cifar10": 16, "celebahq64": 4}
MODELS = [f"{preset}:{kind}" for preset in BATCH for kind in ("fvae", "vae", "glow")]
VARIANTS = {"fvae's choice": None, "nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def build(kind: str, preset: str, memory_format: torch.memory_format | None) -> fvae.LatentFlowModel:
    """The model, with every net forced to ``memory_format`` (None keeps fvae's choice)."""
    torch.manual_seed(0)
    model = fvae.build_model(kind, preset)
    return model if memory_format is None else set_memory_format(model, memory_format)


def step_times(preset: str, kind: str, rounds: int) -> dict[str, float]:
    steps = {}
    for name, memory_format in VARIANTS.items():
        model = build(kind, preset, memory_format)
        x = torch.rand(BATCH[preset], *model.image_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            model.loss(x)  # data-dependent initialisation
        steps[name] = train_step(lambda model=model, x=x: model.loss(x).mean(), model.parameters(), 1e-5)
        steps[name]()  # warm-up
    return {name: round(t, 4) for name, t in alternating_medians(steps, rounds).items()}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=4, help="timed steps per variant (mnist: 2.5x as many)")
    p.add_argument("--models", nargs="+", default=MODELS, help="preset:kind pairs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for item in args.models:
        preset, kind = item.split(":")
        rounds = int(2.5 * args.rounds) if preset == "mnist" else args.rounds
        rows.append({"preset": preset, "model": kind, "batch": BATCH[preset], **step_times(preset, kind, rounds)})
        print(json.dumps(rows[-1]), flush=True)
    write_report(args.out, "memory_format", f"`{command_line()}` ({args.threads} threads, torch {torch.__version__}); "
                 f"seconds per training step\n\n" + markdown_table(rows, ["preset", "model", "batch", *VARIANTS]),
                 {"threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
