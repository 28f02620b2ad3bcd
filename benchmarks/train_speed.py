"""The default run's training speed against an earlier fvae, side by side on this machine.

    python benchmarks/train_speed.py --baseline SRC [--max-steps 1380] [--rounds 1] [--threads 2]

``SRC`` is the source tree of the earlier fvae (``git worktree add /tmp/fvae-0.9.1 v0.9.1``; it
runs in a subprocess with ``PYTHONPATH=SRC``, beside the dependencies installed here). Each round
runs ``fvae train`` (the ``mnist`` preset on the embedded digits, seed 0) with this fvae and with
the baseline in turn, so that both see the same machine; training images/s is steps times batch
over the training time of ``summary.json`` (evaluation, samples and checkpoints excluded). The
test bits/dim of the two runs must agree (the same preset, seed and steps). Prints the table and
writes benchmarks/results/train_speed.{md,json}.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, markdown_table, parser, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def train_run(source: Path, max_steps: int | None, threads: int) -> dict:
    """One ``fvae train`` with the fvae of ``source``: its version, steps, training time, bits/dim."""
    out = Path(tempfile.mkdtemp(prefix="train-speed-")) / "run"
    args = [sys.executable, "-m", "fvae", "train", "--out", str(out), "--no-progress"]
    if max_steps is not None:
        args += ["--max-steps", str(max_steps)]
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(args, env=env, cwd=source, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    version = subprocess.run([sys.executable, "-c", "import fvae; print(fvae.__version__)"], env=env, cwd=source,
                             capture_output=True, text=True, check=True).stdout.strip()
    batch = yaml.safe_load((out / "config.yaml").read_text())["train"]["batch_size"]
    return {"version": version, "steps": summary["steps"], "train_s": summary["wall_time"],
            "images_per_s": round(summary["steps"] * batch / summary["wall_time"], 1),
            "test_bpd": summary["test_bpd"]}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--baseline", type=Path, required=True, help="the source tree of the earlier fvae")
    p.add_argument("--max-steps", type=int, help="steps of each run (default: the preset's)")
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    sources = {"this": REPO, "baseline": args.baseline.resolve()}
    runs = {name: [] for name in sources}
    for _ in range(args.rounds):
        for name, source in sources.items():
            runs[name].append(train_run(source, args.max_steps, args.threads))
            print(name, runs[name][-1], flush=True)
    rows = [{"fvae": name, "version": r[0]["version"], "steps": r[0]["steps"],
             "images_per_s": statistics.median(x["images_per_s"] for x in r),
             "train_s": statistics.median(x["train_s"] for x in r), "test_bpd": r[0]["test_bpd"]}
            for name, r in runs.items()]
    speedup = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    bpd_gap = abs(rows[0]["test_bpd"] - rows[1]["test_bpd"])
    text = (f"`{command_line()}`\n\nThe default run (`fvae train`), {args.rounds} round(s) in turn, medians: "
            f"{speedup:.2f}x the baseline's training images/s; test bits/dim {bpd_gap:.4f} apart\n\n"
            f"{markdown_table(rows, list(rows[0]), {'test_bpd': '.4f'})}\n")
    write_report(args.out, "train_speed", text, {"rows": rows, "runs": runs, "speedup": round(speedup, 3),
                                                 "test_bpd_gap": round(bpd_gap, 4)})


if __name__ == "__main__":
    main()
