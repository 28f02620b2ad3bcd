"""Validates the sample score (fvae.scoring.score) on real images it was not fitted on.

    python benchmarks/validate_score.py [--data embedded|fashion-mnist] [--run RUN ...] [--seeds 5]
                                        [--train-judge [--rule class|object]]

``--train-judge`` first rebuilds the dataset's shipped judge
(fvae/scoring/weights/judge-DATA-v1.safetensors) from its training split: ``train_judge`` with
its defaults on one thread, recognizable by ``--rule``.

The judge was trained on the training split; here the first ``--held-out`` test images (all of
the embedded digits' 1,000; 2,000 of Fashion-MNIST's 10,000) are cut in two halves: the even
rows are the reference, the odd rows are degraded in graded steps (fvae.scoring.degrade: blur,
additive noise, uniform noise, shuffled patches) and scored. Then the spread of each number over
seeds, for 1,000 images: real images (1,000 drawn from the training split per seed, against the
full test split) and, for each ``--run``, 1,000 samples per seed at the run's score temperature.
``class_accuracy`` (the share of images the judge reads as the class they are said to be) of the
held-out half with its own labels, and with those labels shuffled.
Writes benchmarks/results/score_validation{,_fashion}.{md,json}.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from fvae.config import DataConfig
from fvae.data import load_dataset
from fvae.scoring.degrade import DEGRADATIONS, degrade
from fvae.scoring.evaluate import draw_samples
from fvae.scoring.judge import train_judge
from fvae.scoring.score import (
    RECOGNIZABLE_RULES,
    SCORE_KEYS,
    SHIPPED_JUDGES,
    SampleScorer,
    judge_path,
    load_judge,
    save_judge,
    scorer_for,
)
from fvae.training.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).parent))
from report import command_line, write_report  # noqa: E402
from report import parser as report_parser  # noqa: E402


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
    lines = ["| degradation | strength | fid | precision | recall | recognizable | sharpness |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in graded_rows:
        lines.append(f"| {r['degradation']} | {r['strength']:g} | {r['fid']:.1f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['recognizable']:.3f} | {r['sharpness']:.3f} |")
    lines += ["", "| 1,000 images of | fid | precision | recall | recognizable | sharpness |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, s in spreads.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{s[k]['mean']:.3g} ± {s[k]['std']:.2g}" for k in SCORE_KEYS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = report_parser(__doc__, threads=None)
    parser.add_argument("--data", default="embedded", choices=SHIPPED_JUDGES, help="whose judge to validate")
    parser.add_argument("--data-root", help="where the dataset's files live (see fvae train --data-root)")
    parser.add_argument("--held-out", type=int, help="test images to halve into reference and degraded "
                                                     "(default: 1,000 for embedded, 2,000 otherwise)")
    parser.add_argument("--run", nargs="*", default=[], help="run folders whose samples' spread to measure")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-judge", action="store_true", help="rebuild the shipped judge first")
    parser.add_argument("--rule", choices=("class", "object"), help="what the rebuilt judge counts as recognizable "
                                                                   "(default: class for embedded, object otherwise)")
    args = parser.parse_args()
    data = DataConfig(args.data, args.data_root, download=False)
    train_set = load_dataset(data, "train", (1, 28, 28))
    test = load_dataset(data, "test", (1, 28, 28))
    if args.train_judge:
        torch.set_num_threads(1)
        rule = args.rule or ("class" if args.data == "embedded" else "object")
        save_judge(train_judge(*train_set.tensors, recognizable_rule=rule), judge_path(args.data, 1))
    held_out = args.held_out or (1000 if args.data == "embedded" else 2000)
    images = test.tensors[0][:held_out].float() / 255
    judge = load_judge(args.data, None, 1)
    half = SampleScorer(judge, images[0::2], f"judge-{args.data}, even rows of the first {held_out} test images")
    rows = graded(half, images[1::2], seed=0)
    labels = test.tensors[1][:held_out][1::2]
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    accuracy = {"own labels": half.score(images[1::2], labels)["class_accuracy"],
                "shuffled labels": half.score(images[1::2], shuffled)["class_accuracy"]}

    full = scorer_for(args.data, None, test, 1)
    train = train_set.tensors[0].float() / 255

    def real(seed: int) -> dict:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:1000]
        return full.score(train[pick])

    spreads = {"real training images": spread(real, args.seeds)}
    for run in args.run:
        model, config, _ = load_model(run)
        spreads[f"samples of {Path(run).name} (T={config.train.score_temperature:g})"] = spread(
            lambda seed: full.score(draw_samples(model, 1000, config.train.score_temperature, seed=seed)),
            args.seeds)
    table = markdown(rows, spreads) + (
        f"\n\nclass_accuracy of the {len(labels)} held-out images: with their own labels "
        f"{accuracy['own labels']:.3f}, with their labels shuffled {accuracy['shuffled labels']:.3f}\n")
    stem = "score_validation" if args.data == "embedded" else "score_validation_fashion"
    write_report(args.out, stem, f"`{command_line()}` (recognizable: {RECOGNIZABLE_RULES[judge.recognizable_rule]})"
                 f"\n\n{table}", {"graded": rows, "spread_over_seeds": spreads, "seeds": args.seeds,
                                  "features": full.name, "recognizable_rule": judge.recognizable_rule,
                                  "held_out": held_out, "class_accuracy": accuracy})


if __name__ == "__main__":
    main()
