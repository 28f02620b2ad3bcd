"""Editing digits in latent space: class transfer and attribute directions, measured.

    python benchmarks/latent_edits.py --cond-run runs/cond [--model fvae-mnist]

Class transfer (``model.transfer``): 100 of the embedded digits' test images (10 a class) are each
encoded under their own class and decoded under the nine others by a class-conditional model
(``--cond-run``, a run folder; without one an f-VAE is trained for --budget: ``fvae train
model.num_classes=10 --max-time 8m``). The shipped digit judge reads each transfer's class
(target: >= 90% read as the class asked for), and the style is compared: stroke thickness and
slant (:mod:`fvae.scoring.style`) of each source against those of its transfers, each transfer's
figure less the mean of its target class (so that a 1's thinness is not counted as style);
target r >= 0.6. At temperature T the redrawn noise is scaled by T (``model.transfer(...,
temperature=T)``), drawing each transfer towards its target class's mode.

Attribute edit (``model.edit``): the direction from thin to thick digits, the lightest and the
heaviest quarter of each class of the training split by ink mass (within each class, so that the
direction is not "towards 0s and 8s"), walked by the unconditional ``--model`` at strengths
-1, 0, 1, 2 from 100 test digits; their mean ink mass and thickness at each strength.

Writes results/latent_edits.{md,json} and the pictures docs/images/transfer.png and
docs/images/edit.png.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

import fvae
from fvae.commands.values import duration
from fvae.data.datasets import embedded_mnist
from fvae.scoring.score import load_judge
from fvae.scoring.style import ink_mass, slant, stroke_thickness
from fvae.training.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).parent))
from report import markdown_table, parser, write_report  # noqa: E402

PICTURES = Path(__file__).parents[1] / "docs" / "images"
STRENGTHS = [-1.0, 0.0, 1.0, 2.0]


def per_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the first ``count`` items of each class, class by class."""
    return torch.cat([(labels == c).nonzero().squeeze(1)[:count] for c in range(int(labels.max()) + 1)])


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images to the centres of their bins in ``[0, 1)``."""
    return (images.float() + 0.5) / 256


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-12))


def within_target(values: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` figures of transfers less each target column's mean."""
    return values - values.mean(0, keepdim=True)


def class_transfer(model: fvae.LatentFlowModel, per: int, seed: int, temperature: float) -> tuple[dict, torch.Tensor]:
    images, labels = embedded_mnist("test").tensors
    index = per_class(labels, per)
    x, y = to_unit(images[index]), labels[index]
    torch.manual_seed(seed)
    out = model.transfer(x, y, list(range(model.num_classes)), temperature)  # (B, 10, 1, H, W)
    judge = load_judge("embedded", None, 1)
    with torch.no_grad():
        read = judge(out.flatten(0, 1)).argmax(1).view(len(x), -1)
    targets = torch.arange(model.num_classes)[None].expand(len(x), -1)
    other = targets != y[:, None]
    row = {"temperature": temperature, "images": len(x), "transfers": int(other.sum()),
           "class_read": float((read == targets)[other].float().mean()),
           "own_class_read": float((read == targets)[~other].float().mean())}
    for name, measure in (("thickness", stroke_thickness), ("slant", slant)):
        source = measure(x)[:, None].expand(-1, model.num_classes)
        moved = within_target(measure(out.flatten(0, 1)).view(len(x), -1))
        row[f"{name}_r"] = correlation(source[other], moved[other])
    picture = torch.cat([x[::per][:, None], out[::per]], 1)  # one source a class, then its ten transfers
    return row, picture


def attribute_edit(model: fvae.LatentFlowModel, per: int) -> tuple[list[dict], torch.Tensor]:
    images, labels = embedded_mnist("train").tensors
    x, ink = to_unit(images), ink_mass(to_unit(images))
    thin, thick = [], []
    for c in range(10):
        members = (labels == c).nonzero().squeeze(1)
        ordered = members[ink[members].argsort()]
        quarter = len(ordered) // 4
        thin.append(ordered[:quarter])
        thick.append(ordered[-quarter:])
    direction = model.latent_direction(x[torch.cat(thin)], x[torch.cat(thick)])
    test_images, test_labels = embedded_mnist("test").tensors
    probe = to_unit(test_images[per_class(test_labels, per)])
    out = model.edit(probe, direction, STRENGTHS)  # (B, S, 1, H, W)
    rows = [{"strength": s, "ink_mass": float(ink_mass(out[:, i]).mean()),
             "thickness": float(stroke_thickness(out[:, i]).mean())} for i, s in enumerate(STRENGTHS)]
    return rows, torch.cat([probe[::per][:, None], out[::per]], 1)


def conditional_model(args) -> tuple[fvae.LatentFlowModel, str]:
    if args.cond_run is None:
        args.cond_run = args.runs / "cond"
        if not (args.cond_run / "checkpoints").exists():
            print(f"== training a class-conditional f-VAE for {args.budget:.0f} s into {args.cond_run}", flush=True)
            fvae.train("fvae", out=args.cond_run, progress=False, max_time=args.budget,
                       **{"model.num_classes": 10})
    model, _, checkpoint = load_model(args.cond_run)
    return model.eval(), f"{args.cond_run}/{checkpoint.name}"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--cond-run", type=Path, help="a class-conditional run folder (default: train one)")
    p.add_argument("--runs", type=Path, default=Path("runs/latent_edits"), help="where to train it")
    p.add_argument("--budget", type=duration, default=480.0, help="its training time")
    p.add_argument("--model", default="fvae-mnist", help="the unconditional model to edit with")
    p.add_argument("--per-class", type=int, default=10, help="test digits a class")
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.8, 1.0, 0.6],
                   help="transfer temperatures (the first drawn in the picture)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    PICTURES.mkdir(parents=True, exist_ok=True)

    cond, cond_source = conditional_model(args)
    transfers = []
    for t in args.temperatures:
        row, grid = class_transfer(cond, args.per_class, args.seed, t)
        transfers.append(row)
        if t == args.temperatures[0]:
            transfer_grid = grid
    save_image(transfer_grid.flatten(0, 1), PICTURES / "transfer.png", nrow=transfer_grid.shape[1], pad_value=0.5)
    editor = fvae.from_pretrained(args.model).eval()
    edits, edit_grid = attribute_edit(editor, args.per_class)
    save_image(edit_grid.flatten(0, 1), PICTURES / "edit.png", nrow=edit_grid.shape[1], pad_value=0.5)

    markdown = "\n\n".join([
        f"Class transfer by `{cond_source}` ({transfers[0]['images']} test digits, each to the 9 other classes; "
        f"the picture at T = {args.temperatures[0]:g}):",
        markdown_table(transfers, ["temperature", "transfers", "class_read", "own_class_read", "thickness_r", "slant_r"],
                       {"class_read": ".3f", "own_class_read": ".3f", "thickness_r": ".2f", "slant_r": ".2f"},
                       {"class_read": "read as the target class", "own_class_read": "own class (reconstruction)",
                        "thickness_r": "thickness r", "slant_r": "slant r"}),
        f"Thin-to-thick edit by `{args.model}` ({args.per_class * 10} test digits):",
        markdown_table(edits, ["strength", "ink_mass", "thickness"], {"ink_mass": ".4f", "thickness": ".2f"}),
    ])
    write_report(args.out, "latent_edits", markdown, {"transfer": transfers, "edit": edits,
                                                      "cond_run": cond_source, "edit_model": args.model})


if __name__ == "__main__":
    main()
