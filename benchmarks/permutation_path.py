"""A training step of the flows whose mixing is a permutation (the CelebA-HQ presets' ``shuffle``),
with each step's ActNorm and permutation folded into a dense 1x1 convolution by ``P diag(e^s)``
(what a GPU runs) and as a gather and a per-channel scale (what a CPU runs):
:class:`fvae.flows.conv1x1.Permutation`.

    python benchmarks/permutation_path.py [--threads 2] [--rounds 6] [--rows celebahq64:fvae:4 ...]

Each row (``preset:kind:batch``) builds the model from seed 0 and initialises its ActNorms; the two
paths then train the same model on the same batch in alternation, one step each in turn
(forward, backward, fused Adam; fp32), the path switched by ``Permutation.dense`` before each
step. Reports the median seconds a step of each and their ratio. Writes
benchmarks/results/permutation_path.{md,json}.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import fvae
from fvae.flows.conv1x1 import Permutation

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, markdown_table, parser, write_report  # noqa: E402
from timing import alternating_medians, train_step  # noqa: E402

ROWS = ["celebahq64:fvae:4", "celebahq64:fvae:32", "celebahq64:composite:4"]
PATHS = {"dense (GPU's)": True, "gathered (CPU's)": False}


def step_times(preset: str, kind: str, batch: int, rounds: int) -> dict[str, float]:
    """Median seconds a training step with the permutations dense and gathered."""
    torch.manual_seed(0)
    model = fvae.build_model(kind, preset)
    permutations = [m for m in model.modules() if isinstance(m, Permutation)]
    if not permutations:
        raise SystemExit(f"the {kind} of {preset} has no permutation")
    x = torch.rand(batch, *model.image_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.loss(x)  # data-dependent initialisation
    step = train_step(lambda: model.loss(x).mean(), model.parameters(), 1e-5)

    def on_path(dense: bool):
        def run() -> None:
            for block in permutations:
                block.dense = dense
            step()
        return run

    steps = {name: on_path(dense) for name, dense in PATHS.items()}
    for run in steps.values():
        run()  # warm-up
    return {name: round(t, 4) for name, t in alternating_medians(steps, rounds).items()}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=6, help="timed steps per path")
    p.add_argument("--rows", nargs="+", default=ROWS, help="preset:kind:batch triples")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for item in args.rows:
        preset, kind, batch = item.split(":")
        times = step_times(preset, kind, int(batch), args.rounds)
        dense, gathered = times.values()
        rows.append({"preset": preset, "model": kind, "batch": int(batch), **times,
                     "dense / gathered": round(dense / gathered, 2)})
        print(json.dumps(rows[-1]), flush=True)
    write_report(args.out, "permutation_path",
                 f"`{command_line()}` ({args.threads} threads, torch {torch.__version__}); median seconds per "
                 f"training step, fp32, {args.rounds} steps a path in alternation\n\n"
                 + markdown_table(rows, ["preset", "model", "batch", *PATHS, "dense / gathered"]),
                 {"threads": args.threads, "rounds": args.rounds, "rows": rows})


if __name__ == "__main__":
    main()
