"""Conditioning on a continuous context: digits drawn with the ink mass asked for.

    python benchmarks/context.py [--budget 8m] [--runs runs/context]

An f-VAE of the ``mnist`` preset is trained on the embedded digits' 4,000 training images with
each image's ink mass (its mean pixel value, standardised) as a one-entry context, as
``fvae.train("fvae", data=images, context=ink)`` trains it (``model.num_context=1``: the top
prior, the split priors and the coupling nets are affine in the context). Then it draws
--per-level samples at each of 10 ink masses from the training set's 5th to its 95th percentile,
at the preset's sample temperature, and measures their ink mass: the correlation between the
asked and the drawn ink mass is the figure (target r >= 0.8).

Writes results/context.{md,json} and docs/images/context.png (a row per asked ink mass, lightest
first).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

import fvae
from fvae.commands.values import duration
from fvae.data.datasets import embedded_mnist
from fvae.scoring.style import ink_mass
from fvae.training.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).parent))
from latent_edits import PICTURES, correlation  # noqa: E402
from report import markdown_table, parser, write_report  # noqa: E402


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--budget", type=duration, default=480.0, help="training time")
    p.add_argument("--runs", type=Path, default=Path("runs/context"), help="the run folder (reused if trained)")
    p.add_argument("--per-level", type=int, default=20, help="samples at each asked ink mass")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    images = embedded_mnist("train").tensors[0]
    ink = ink_mass(images.float() / 255)
    mean, std = ink.mean(), ink.std()
    if not (args.runs / "checkpoints").exists():
        print(f"== training on the embedded digits with their ink mass as context for {args.budget:.0f} s", flush=True)
        fvae.train("fvae", data=images, context=(ink - mean) / std, out=args.runs, progress=False,
                   max_time=args.budget, max_steps=10 ** 9)
    model, config, checkpoint = load_model(args.runs)
    model.eval()
    temperature = config.train.score_temperature

    asked = torch.quantile(ink, torch.linspace(0.05, 0.95, 10))
    context = ((asked - mean) / std).repeat_interleave(args.per_level)[:, None]
    torch.manual_seed(args.seed)
    samples = model.sample(len(context), temperature, context=context)
    drawn = ink_mass(samples)
    rows = [{"asked": float(a), "drawn_mean": float(d.mean()), "drawn_std": float(d.std())}
            for a, d in zip(asked, drawn.view(10, -1))]
    r = correlation(asked.repeat_interleave(args.per_level), drawn)
    save_image(samples.view(10, args.per_level, *samples.shape[1:])[:, :10].flatten(0, 1), PICTURES / "context.png",
               nrow=10, pad_value=0.5)
    markdown = "\n\n".join([
        f"`{args.runs}/{checkpoint.name}` ({config.preset} preset, `model.num_context=1`), {args.per_level} samples "
        f"at each ink mass, T = {temperature:g}: **r = {r:.3f}** between the asked and the drawn ink mass.",
        markdown_table(rows, ["asked", "drawn_mean", "drawn_std"],
                       {"asked": ".4f", "drawn_mean": ".4f", "drawn_std": ".4f"},
                       {"asked": "asked ink mass", "drawn_mean": "drawn: mean", "drawn_std": "drawn: std"}),
    ])
    write_report(args.out, "context", markdown, {"r": r, "rows": rows, "temperature": temperature,
                                                 "run": f"{args.runs}/{checkpoint.name}"})


if __name__ == "__main__":
    main()
