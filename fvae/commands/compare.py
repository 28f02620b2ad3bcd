"""Compare training runs: a table of final numbers and plots of test bits/dim and the sample
score (FID, recognizable, sharpness) against steps and wall-clock time, read from each run's
``metrics.jsonl`` and ``eval.json``; and the training time each run needed until half its
samples were recognizable."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fvae.config import RunConfig
from fvae.errors import PathMissing
from fvae.models import model_from_config
from fvae.scoring.score import CLASS_SCORE_KEYS, SCORE_KEYS
from fvae.training.run_log import read_records

BOUNDS = ("elbo_bpd", "iw_bpd", "exact_bpd", "marginal_iw_bpd", "marginal_exact_bpd")


def load_run(run_dir: str | Path) -> dict:
    """A run's name, config, curve (``metrics.jsonl``), last evaluation and parameter count."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise PathMissing(f"{run_dir} is not a run folder: it has no metrics.jsonl")
    curve = read_records(metrics)
    config = RunConfig.load_yaml(run_dir / "config.yaml")
    evaluation = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").exists() else None
    parameters = sum(p.numel() for p in model_from_config(config.model).parameters())
    return {"name": run_dir.name, "model": config.model.kind, "preset": config.preset, "curve": curve,
            "eval": evaluation, "parameters": parameters}


def time_to_recognizable(curve: list[dict], share: float = 0.5) -> float | None:
    """Training seconds until the first evaluation with ``recognizable >= share`` (None: never)."""
    return next((p["wall_time"] for p in curve if p.get("recognizable") is not None and p["recognizable"] >= share),
                None)


def comparison_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        last = run["curve"][-1]
        row = {"run": run["name"], "model": run["model"], "preset": run["preset"],
               "parameters": run["parameters"], "steps": last["step"], "wall_time_s": last["wall_time"],
               "test_bpd": last["test_bpd"], **{k: last.get(k) for k in SCORE_KEYS + CLASS_SCORE_KEYS},
               "seconds_to_half_recognizable": time_to_recognizable(run["curve"])}
        if run["eval"]:
            metrics = run["eval"]["metrics"]
            row.update({k: metrics.get(k) for k in (*BOUNDS, "psnr", *SCORE_KEYS, *CLASS_SCORE_KEYS)
                        if metrics.get(k) is not None})
            row["features"] = metrics.get("features")
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    columns = ["run", "model", "preset", "parameters", "steps", "wall_time_s", "test_bpd", *BOUNDS,
               "psnr", *SCORE_KEYS, *CLASS_SCORE_KEYS, "seconds_to_half_recognizable"]
    columns = [c for c in columns if any(r.get(c) is not None for r in rows)]

    def cell(v):
        return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    features = {r.get("features") for r in rows} - {None}
    if features:
        lines.append(f"\nsample score features: {', '.join(sorted(features))}")
    return "\n".join(lines)


PLOTTED = (("test_bpd", "test bits/dim (ELBO)", "log"), ("fid", "FID (judge features)", "log"),
           ("recognizable", "recognizable samples", "linear"), ("sharpness", "sharpness (1: as real images)", "linear"))


def plot_curves(runs: list[dict], path: str | Path) -> None:
    """A 4x2 figure: test bits/dim, FID, the recognizable share of samples and their sharpness,
    against steps and against training seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PLOTTED), 2, figsize=(11, 4 * len(PLOTTED)))
    for run in runs:
        for row, (metric, _, _) in enumerate(PLOTTED):
            points = [(p["step"], p["wall_time"], p[metric]) for p in run["curve"] if p.get(metric) is not None]
            if not points:
                continue
            steps, times, values = zip(*points)
            label = f"{run['name']} ({run['model']})"
            axes[row, 0].plot(steps, values, marker="o", label=label)
            axes[row, 1].plot(times, values, marker="o", label=label)
    for row, (_, name, scale) in enumerate(PLOTTED):
        axes[row, 0].set(xlabel="step", ylabel=name)
        axes[row, 1].set(xlabel="training seconds", ylabel=name)
        for ax in axes[row]:
            ax.set_yscale(scale)
            ax.grid(alpha=0.3, which="both")
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_compare(args: argparse.Namespace) -> int:
    runs = [load_run(r) for r in args.runs]
    rows = comparison_rows(runs)
    table = markdown_table(rows)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    plot_curves(runs, out / "comparison.png")
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.json'}, {out / 'comparison.png'}")
    return 0
