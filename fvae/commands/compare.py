"""Compare training runs: a table of final numbers and plots of test bits/dim and the sample
score (FID, recognizable, sharpness) against steps and wall-clock time, read from each run's
``metrics.jsonl`` and ``eval.json``; and the training time each run needed until half its
samples were recognizable."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fvae.commands.reporting import markdown_table, plot_curves
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


def comparison_table(rows: list[dict]) -> str:
    """The runs' numbers, a row each, in the columns some run has; the score's features named below."""
    columns = ["run", "model", "preset", "parameters", "steps", "wall_time_s", "test_bpd", *BOUNDS,
               "psnr", *SCORE_KEYS, *CLASS_SCORE_KEYS, "seconds_to_half_recognizable"]
    columns = [c for c in columns if any(r.get(c) is not None for r in rows)]
    three = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = markdown_table(rows, columns, {c: three for c in columns})
    features = {r.get("features") for r in rows} - {None}
    return table + (f"\n\nsample score features: {', '.join(sorted(features))}" if features else "")


PLOTTED = (("test_bpd", "test bits/dim (ELBO)", "log"), ("fid", "FID (judge features)", "log"),
           ("recognizable", "recognizable samples", "linear"), ("sharpness", "sharpness (1: as real images)", "linear"))


def cmd_compare(args: argparse.Namespace) -> int:
    runs = [load_run(r) for r in args.runs]
    rows = comparison_rows(runs)
    table = comparison_table(rows)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    plot_curves({f"{run['name']} ({run['model']})": run["curve"] for run in runs}, PLOTTED,
                (("step", "step"), ("wall_time", "training seconds")), out / "comparison.png")
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.json'}, {out / 'comparison.png'}")
    return 0
