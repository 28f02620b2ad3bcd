"""Your own image shape: the mnist preset's f-VAE laid out for digits of other sizes.

    python benchmarks/own_shapes.py [--budget 2m] [--sizes 8 14]

The embedded digits' 4,000 training images, resized to each of --sizes (area averaging), are
given to ``fvae.train`` as a plain ``uint8`` array: fvae lays the preset's model out for the shape
(``fvae.models.layout``) and trains it for --budget. Writes results/own_shapes.{md,json} (the
layout chosen, steps, test bits/dim) and docs/images/own_shapes.png (16 samples of each size at the
preset's temperature, a row of 8 real digits above each).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

import fvae
from fvae.commands.values import duration
from fvae.data.datasets import embedded_mnist

sys.path.insert(0, str(Path(__file__).parent))
from latent_edits import PICTURES  # noqa: E402
from report import markdown_table, parser, write_report  # noqa: E402


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """``uint8`` images ``(N, 1, 28, 28)`` area-averaged to ``size x size``, still ``uint8``."""
    return F.interpolate(images.float(), size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--budget", type=duration, default=120.0, help="training time per size")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 14])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    images = embedded_mnist("train").tensors[0]
    rows, grids = [], []
    for size in args.sizes:
        data = resized(images, size)
        with tempfile.TemporaryDirectory() as out:
            model, summary = fvae.train("fvae", data=data, out=out, progress=False, max_time=args.budget,
                                        max_steps=10 ** 9, score_samples=0)
        config = model.config
        rows.append({"size": f"{size}x{size}", "pad_to": config.pad_to, "flow_levels": config.flow_levels,
                     "flow_steps": str(list(config.flow_steps)), "steps": summary["steps"],
                     "test_bpd": summary["test_bpd"]})
        torch.manual_seed(0)
        samples = model.sample(16, temperature=0.65)
        real = data[:8].float() / 255
        grids.append(F.interpolate(torch.cat([real, samples]), size=(28, 28), mode="nearest"))
    save_image(torch.cat(grids), PICTURES / "own_shapes.png", nrow=8, pad_value=0.5)
    markdown = markdown_table(rows, ["size", "pad_to", "flow_levels", "flow_steps", "steps", "test_bpd"],
                              {"steps": ",", "test_bpd": ".3f"}, {"test_bpd": "test bits/dim (ELBO)"})
    write_report(args.out, "own_shapes", markdown, {"rows": rows, "budget_s": args.budget})


if __name__ == "__main__":
    main()
