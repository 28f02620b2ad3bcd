"""Validates the sample score (fvae.scoring.score) on real digits it was not fitted on.

    python benchmarks/validate_score.py [--run RUN ...] [--seeds 5] [--train-judge]

``--train-judge`` first rebuilds the shipped judge (fvae/scoring/weights/judge-embedded-v1.safetensors)
from the embedded training split: ``train_judge`` with its defaults on one thread.

The judge was trained on the embedded training split; here the embedded test split is cut in
two halves: the even rows are the reference, the odd rows (500 digits) are degraded in graded
steps (fvae.scoring.degrade: blur, additive noise, uniform noise, shuffled patches) and scored. Then
the spread of each number over seeds, for 1,000 images: real digits (1,000 drawn from the
training split per seed, against the full test split) and, for each ``--run``, 1,000 samples
per seed at the run's score temperature. Writes benchmarks/results/score_validation.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from fvae.data import embedded_mnist
from fvae.scoring.degrade import DEGRADATIONS, degrade
from fvae.scoring.evaluate import draw_samples
from fvae.scoring.judge import train_judge
from fvae.scoring.score import SCORE_KEYS, SampleScorer, judge_path, load_judge, save_judge, scorer_for
from fvae.training.checkpoint import load_model

RESULTS = Path(__file__).with_name("results")


def graded(scorer: SampleScorer, held_out: torch.Tensor, seed: int) -> list[dict]:
    rows = []
    for kind, strengths in DEGRADATIONS.items():
        g = torch.Generator().manual_seed(seed)
        for strength in strengths:
            score = scorer.score(degrade(held_out, kind, strength, g))
            rows.append({"degradation": kind, "strength": strength, **{k: score[k] for k in SCORE_KEYS}})
    return rows


def spread(score_fn, seeds: int) -> dict:
    """Mean and standard deviation of each number over ``seeds`` draws."""
    scores = [score_fn(seed) for seed in range(seeds)]
    return {k: {"mean": statistics.mean(s[k] for s in scores), "std": statistics.stdev(s[k] for s in scores)}
            for k in SCORE_KEYS}


def markdown(graded_rows: list[dict], spreads: dict[str, dict]) -> str:
    lines = ["| degradation | strength | fid | precision | recall | recognizable |", "|---|---:|---:|---:|---:|---:|"]
    for r in graded_rows:
        lines.append(f"| {r['degradation']} | {r['strength']:g} | {r['fid']:.1f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['recognizable']:.3f} |")
    lines += ["", "| 1,000 images of | fid | precision | recall | recognizable |", "|---|---:|---:|---:|---:|"]
    for name, s in spreads.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{s[k]['mean']:.3g} ± {s[k]['std']:.2g}" for k in SCORE_KEYS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs="*", default=[], help="run folders whose samples' spread to measure")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--train-judge", action="store_true", help="rebuild the shipped judge first")
    args = parser.parse_args()
    if args.train_judge:
        torch.set_num_threads(1)
        save_judge(train_judge(*embedded_mnist("train").tensors), judge_path("embedded", 1))
    test = embedded_mnist("test")
    images = test.tensors[0].float() / 255
    half = SampleScorer(load_judge("embedded", None, 1), images[0::2], "judge-embedded, even test rows")
    rows = graded(half, images[1::2], seed=0)

    full = scorer_for("embedded", None, test, 1)
    train = embedded_mnist("train").tensors[0].float() / 255

    def real(seed: int) -> dict:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:1000]
        return full.score(train[pick])

    spreads = {"real training digits": spread(real, args.seeds)}
    for run in args.run:
        model, config, _ = load_model(run)
        spreads[f"samples of {Path(run).name} (T={config.train.score_temperature:g})"] = spread(
            lambda seed: full.score(draw_samples(model, 1000, config.train.score_temperature, seed=seed)),
            args.seeds)
    table = markdown(rows, spreads)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "score_validation.md").write_text(
        "`python benchmarks/validate_score.py" + "".join(f" --run {r}" for r in args.run[:1]) + "".join(
            f" {r}" for r in args.run[1:]) + "`\n\n" + table + "\n")
    (args.out / "score_validation.json").write_text(json.dumps(
        {"graded": rows, "spread_over_seeds": spreads, "seeds": args.seeds, "features": full.name}, indent=2))


if __name__ == "__main__":
    main()
