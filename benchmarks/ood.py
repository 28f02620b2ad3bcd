"""Do likelihood models trained on clothes know that digits are not clothes? (Nalisnick et al., 2019)

    pip install -e ".[bench]"
    python benchmarks/ood.py [--budget 30m] [--runs DIR] [--models fvae glow vae] [--iw-samples 10]

Each model is trained on Fashion-MNIST's 60,000 training images for --budget (its
``fashion-mnist`` preset, as ``fvae train --preset fashion-mnist --max-time BUDGET`` trains it), or
taken from ``--runs DIR/MODEL`` where such a run folder exists (``compare_peers.py --data
fashion-mnist --runs DIR`` leaves them). Then each image's tightest bound in bits/dim (exact for
Glow, the IW bound with K = --iw-samples for the others) on Fashion-MNIST's test split (in
distribution) and on the embedded digits' test split (out of distribution), and the AUROC of
bits/dim as an out-of-distribution score: the probability that a digit gets more bits than a
garment (1: always told apart, 0.5: chance, 0: digits always look *more* likely). Kirichenko et
al.'s (2020) Glow reads 3.14 bits/dim on Fashion-MNIST and 2.08 on MNIST.

Writes benchmarks/results/ood.{md,json} (rows keyed by ``model``: ``in_bpd``, ``out_bpd``,
``auroc``, medians and the bound) and ood_histograms.png.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

import fvae
from fvae.commands.values import duration
from fvae.config import DataConfig
from fvae.data import load_dataset
from fvae.presets import run_config
from fvae.scoring.evaluate import per_image_bits_per_dim
from fvae.scoring.metrics import auroc
from fvae.training.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).parent))
from report import markdown_table, parser, write_report  # noqa: E402


def trained(kind: str, args) -> tuple[fvae.LatentFlowModel, dict]:
    """The ``kind`` model trained on Fashion-MNIST: the run in ``--runs`` where there is one, else trained now."""
    run = args.runs / kind
    if not (run / "checkpoints").exists():
        config = run_config(kind, "fashion-mnist")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=args.data_root, download=False),
                                     train=dataclasses.replace(config.train, max_time=args.budget, max_steps=10 ** 9,
                                                               checkpoint_every=10 ** 9, score_samples=0))
        print(f"== {kind}: training on Fashion-MNIST for {args.budget:.0f} s into {run}", flush=True)
        fvae.train(config=config, out=run, progress=False)
    model, config, checkpoint = load_model(run)
    return model, {"run": str(run), "checkpoint": checkpoint.name, "preset": config.preset}


def plot(per_image: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """One panel a model: the per-image bits/dim of both test splits on shared bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_image), figsize=(5 * len(per_image), 3.5), squeeze=False)
    for ax, (kind, splits) in zip(axes[0], per_image.items()):
        values = torch.cat(list(splits.values()))
        low, high = values.quantile(0.001).item(), values.quantile(0.999).item()
        for name, bpd in splits.items():
            ax.hist(bpd.clamp(low, high).numpy(), bins=60, range=(low, high), density=True, alpha=0.55,
                    label=f"{name} (mean {bpd.mean().item():.2f})")
        ax.set_title(f"{kind}, trained on Fashion-MNIST")
        ax.set_xlabel("bits/dim")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--budget", type=duration, default=1800.0, help="training time of a model trained here")
    p.add_argument("--runs", type=Path, default=Path("runs/ood"), help="run folders DIR/MODEL, used or made")
    p.add_argument("--models", nargs="+", choices=("fvae", "glow", "vae"), default=["fvae", "glow", "vae"])
    p.add_argument("--iw-samples", type=int, default=10, help="K of the IW bound (the f-VAE and the VAE)")
    p.add_argument("--max-images", type=int, help="test images of each split (default: all)")
    p.add_argument("--data-root", help="where Fashion-MNIST's idx files are (default: found as fvae train finds them)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = {"fashion-mnist": load_dataset(DataConfig("fashion-mnist", args.data_root, download=False), "test",
                                            (1, 28, 28)),
              "digits": load_dataset(DataConfig("embedded"), "test", (1, 28, 28))}
    rows, per_image = [], {}
    for kind in args.models:
        model, origin = trained(kind, args)
        per_image[kind], bounds = {}, {}
        for name, dataset in splits.items():
            bounds[name], per_image[kind][name] = per_image_bits_per_dim(model, dataset, args.iw_samples,
                                                                          max_images=args.max_images)
        fashion, digits = per_image[kind]["fashion-mnist"], per_image[kind]["digits"]
        rows.append({"model": kind, "bound": bounds["fashion-mnist"], "in_bpd": round(fashion.mean().item(), 4),
                     "in_bpd_median": round(fashion.median().item(), 4), "out_bpd": round(digits.mean().item(), 4),
                     "out_bpd_median": round(digits.median().item(), 4),
                     "auroc": round(auroc(fashion, digits), 4), **origin})
        print(rows[-1], flush=True)
    plot(per_image, args.out / "ood_histograms.png")
    table = markdown_table(rows, ["model", "bound", "in_bpd", "in_bpd_median", "out_bpd", "out_bpd_median", "auroc"],
                           headers={"in_bpd": "Fashion-MNIST test bits/dim", "in_bpd_median": "median",
                                    "out_bpd": "digits bits/dim", "out_bpd_median": "median",
                                    "auroc": "AUROC (digits out)"})
    origins = ", ".join(f"{r['model']}: {r['run']}" for r in rows)
    note = (f"Models trained on Fashion-MNIST ({origins}); "
            f"bits/dim of each image of both test splits (IW bound K = {args.iw_samples} for the f-VAE and the "
            f"VAE, exact for Glow); AUROC: the probability that a digit gets more bits than a garment.")
    write_report(args.out, "ood", f"`python benchmarks/ood.py {' '.join(sys.argv[1:])}`\n\n{table}\n\n{note}\n",
                 {"rows": rows, "iw_samples": args.iw_samples, "budget_s": args.budget})


if __name__ == "__main__":
    main()
