"""Ops and host read-backs per training step, for every model kind and preset.

    python benchmarks/step_ops.py [--presets mnist celebahq64] [--kinds fvae glow] [--steps 3]
                                  [--baseline SRC]

Each row builds the preset's ``Trainer`` on random images of its shape (batch 64, 4 for the
``celebahq`` presets), runs one warm-up step, then counts with a ``TorchDispatchMode`` every
ATen op that ``--steps`` steps dispatch (forward, backward, clipping, Adam, the EMA: what a GPU
would launch, plus views and ``detach``) and the host read-backs among them
(``_local_scalar_dense``: ``.item()``, ``bool(tensor)``, ``float(tensor)``). The steps are those
between two log steps, as :meth:`Trainer.fit` runs them. ``detach_per_step`` says how many of the
ops are ``detach``: under a dispatch mode, autograd dispatches one each time it saves a tensor an
op returned (ReLU's, GroupNorm's statistics, ``exp``'s) and again when backward unpacks it, which
a plain run does not (``torch.profiler`` shows no such ``detach``); none of them launches a kernel.
Every row runs in fp32 (``train.precision=32``), what a GPU run gets by default, so that no
autocast cast is counted on a CPU where ``auto`` picks bf16. ``ops_per_step`` counts the ops of the
path a GPU runs; where that differs from a CPU's (a flow whose mixing is a permutation: dense on
CUDA, gathered on a CPU, :class:`fvae.flows.conv1x1.Permutation`), ``cpu_ops_per_step`` counts the
CPU's too. ``--baseline SRC`` counts the same rows
with the fvae in the source tree ``SRC`` too (for instance ``git worktree add /tmp/fvae-0.9.1
v0.9.1``), in a subprocess. Prints the table and writes benchmarks/results/step_ops.{md,json}.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import TensorDataset


READ_BACKS = ("aten._local_scalar_dense",)
KINDS = ("fvae", "composite", "vae", "glow")
PRESETS = ("mnist", "fashion-mnist", "cifar10", "celebahq64", "celebahq128")


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops dispatched inside it, by name."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_row(kind: str, preset: str, steps: int) -> dict:
    """Ops and read-backs per step of the ``kind`` model of ``preset`` (module docstring)."""
    from fvae import __version__
    from fvae.presets import run_config
    from fvae.training.trainer import Trainer

    config = run_config(kind, preset)
    batch = 4 if preset.startswith("celebahq") else 64
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=batch, precision="32",
                                                                   log_every=1 << 30))
    shape = config.model.image_shape
    images = torch.randint(0, 256, (4 * batch, *shape), dtype=torch.uint8)
    data = TensorDataset(images, torch.randint(0, 10, (4 * batch,)))
    trainer = Trainer(config, tempfile.mkdtemp(prefix="step-ops-"), progress=False, train_set=data, test_set=data)
    # the permutations of the CelebA-HQ presets' flows run dense on CUDA and gathered on a CPU
    # (fvae.flows.conv1x1.Permutation): both paths are counted, the GPU's first
    permutations = [m for m in trainer.model.modules() if hasattr(m, "dense")]
    paths = {"gpu": True, "cpu": None} if permutations else {"gpu": None}
    counts = {}
    try:
        batches = trainer.batches.from_step(0)
        trainer._train_step(*next(batches))
        for path, dense in paths.items():
            for block in permutations:
                block.dense = dense
            with OpCounter() as counter:
                for _ in range(steps):
                    trainer._train_step(*next(batches))
            counts[path] = counter.counts
    finally:
        trainer.close()
    ops = counts["gpu"]
    top = [{"op": name, "per_step": round(n / steps, 1)} for name, n in ops.most_common(8)]
    return {"version": __version__, "kind": kind, "preset": preset, "batch": batch,
            "ops_per_step": round(sum(ops.values()) / steps, 1),
            "cpu_ops_per_step": round(sum(counts.get("cpu", ops).values()) / steps, 1),
            "detach_per_step": round(ops["aten.detach"] / steps, 1),
            "read_backs_per_step": round(sum(ops[r] for r in READ_BACKS) / steps, 2),
            "parameters": sum(p.numel() for p in trainer.model.parameters()), "top_ops": top}


def baseline_rows(source: Path, kinds: list[str], presets: list[str], steps: int) -> list[dict]:
    """The rows counted with the fvae of the source tree ``source``, in a subprocess."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import step_ops; "
            f"print(json.dumps([step_ops.count_row(k, p, {steps}) for p in {presets!r} for k in {kinds!r}]))")
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=source, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    # imported here: --baseline imports this module beside an earlier fvae, which report.py may not fit
    sys.path.insert(0, str(Path(__file__).parent))
    from report import command_line, markdown_table, parser, write_report
    p = parser(__doc__)
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--steps", type=int, default=3, help="steps counted per row, after one warm-up step")
    p.add_argument("--baseline", type=Path, help="the source tree of an earlier fvae to count too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [count_row(kind, preset, args.steps) for preset in args.presets for kind in args.kinds]
    if args.baseline is not None:
        rows += baseline_rows(args.baseline.resolve(), args.kinds, args.presets, args.steps)
    columns = ["version", "preset", "kind", "batch", "ops_per_step", "cpu_ops_per_step", "detach_per_step",
               "read_backs_per_step", "parameters"]
    text = (f"`{command_line()}`\n\nATen ops and host read-backs per training step between log steps "
            f"(counted over {args.steps} steps after a warm-up step)\n\n"
            f"{markdown_table(rows, columns, {'parameters': ',', 'ops_per_step': ',.0f', 'cpu_ops_per_step': ',.0f', 'detach_per_step': ',.0f'})}\n")
    write_report(args.out, "step_ops", text, {"steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
