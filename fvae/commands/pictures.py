"""Image grids a user looks at, and the commands that write them: ``fvae sample``,
``fvae reconstruct``, ``fvae interpolate``.

A class-conditional model draws, codes and decodes with labels: ``fvae sample`` gives each class
asked for (``--classes``, default all) its rows; reconstructions use each test image's label;
an interpolation between two images moves the label too, as class weights ``(1 - t) e_a + t e_b``
(it holds the class where both images have it)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.utils import save_image

from fvae.commands.runs import checkpoint_step, evaluation_images, load_run_model, output_path, writable_folder
from fvae.errors import InputError
from fvae.flows.base import class_weights
from fvae.models import LatentFlowModel
from fvae.scoring.evaluate import draw_samples

# what --out may end in to name the picture itself (else it names a folder): the formats PIL writes
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@torch.no_grad()
def reconstruction_grid(model: LatentFlowModel, x: torch.Tensor, labels: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """Inputs and their reconstructions ``decode(encode(x))`` interleaved by rows of 8:
    ``(2B, C, H, W)`` with rows input, reconstruction, input, ..."""
    recon = model.decode(model.encode(x, labels), labels)
    rows = []
    for i in range(0, len(x), 8):
        rows += [x[i:i + 8].clamp(0, 1), recon[i:i + 8]]
    return torch.cat(rows)


def _mix(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) * a + t * b


def _weights(model: LatentFlowModel, labels: torch.Tensor | None) -> torch.Tensor | None:
    return None if labels is None else class_weights(labels, model.num_classes)


@torch.no_grad()
def interpolation_rows(model: LatentFlowModel, a: torch.Tensor, b: torch.Tensor, steps: int = 9,
                       labels_a: torch.Tensor | None = None, labels_b: torch.Tensor | None = None) -> torch.Tensor:
    """For each pair ``(a_i, b_i)``, ``steps`` images decoded along ``z = (1-t) z_a + t z_b``
    (and, for a class-conditional model, labels ``(1-t) e_a + t e_b``): ``(B * steps, C, H, W)``,
    one pair a row."""
    za, zb = model.encode(a, labels_a), model.encode(b, labels_b)
    wa, wb = _weights(model, labels_a), _weights(model, labels_b)
    rows = []
    for i in range(len(a)):
        ts = torch.linspace(0, 1, steps).tolist()
        z = torch.stack([_mix(za[i], zb[i], t) for t in ts])
        w = None if wa is None else torch.stack([_mix(wa[i], wb[i], t) for t in ts])
        rows.append(model.decode(z, w))
    return torch.cat(rows)


@torch.no_grad()
def interpolation_square(model: LatentFlowModel, corners: torch.Tensor, steps: int = 9,
                         labels: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear interpolation in ``z`` (and a class-conditional model's class weights) between four
    images (top-left, top-right, bottom-left, bottom-right): ``(steps * steps, C, H, W)``, row by row."""
    z, w = model.encode(corners, labels), _weights(model, labels)
    ts = torch.linspace(0, 1, steps).tolist()
    grid, weights = [], []
    for r in ts:
        for c in ts:
            grid.append(_mix(_mix(z[0], z[2], r), _mix(z[1], z[3], r), c))
            if w is not None:
                weights.append(_mix(_mix(w[0], w[2], r), _mix(w[1], w[3], r), c))
    return model.decode(torch.stack(grid), torch.stack(weights) if weights else None)


def sample_labels(model: LatentFlowModel, classes: list[int] | None, num: int, nrow: int) -> torch.Tensor | None:
    """The labels of a sample grid: for a class-conditional model, rows of ``nrow`` of each class
    asked for (default all), ``num // (nrow * classes)`` rows each (at least one); None otherwise."""
    if not model.num_classes:
        if classes:
            raise InputError("--classes needs a class-conditional model (trained with model.num_classes > 0)")
        return None
    classes = list(range(model.num_classes)) if not classes else classes
    bad = [c for c in classes if not 0 <= c < model.num_classes]
    if bad:
        raise InputError(f"--classes {bad}: this model has classes 0..{model.num_classes - 1}")
    rows = max(1, num // (nrow * len(classes)))
    return torch.tensor(classes).repeat_interleave(rows * nrow)


def cmd_sample(args: argparse.Namespace) -> int:
    """Grids of samples into ``--out``; by default a run's ``samples/`` folder (never over the grids
    training wrote), or ``./NAME`` for a shipped or exported model. Drawn in batches."""
    model, config, checkpoint, run_dir = load_run_model(args)
    default = run_dir / "samples" if checkpoint_step(checkpoint) is not None else run_dir
    out = writable_folder(Path(args.out) if args.out else default)
    labels = sample_labels(model, args.classes, args.num, args.nrow)
    for t in args.temperatures or config.train.temperatures:
        images = draw_samples(model, args.num if labels is None else len(labels), t, seed=args.seed, labels=labels)
        path = out / f"samples_T{t:g}.png"
        save_image(images, path, nrow=args.nrow)
        print(f"wrote {path}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    model, config, _, run_dir = load_run_model(args)
    x, labels = evaluation_images(config, args, args.num, next(model.parameters()).device, model.conditional)
    path = output_path(args.out, run_dir, "reconstructions.png", IMAGE_SUFFIXES)
    save_image(reconstruction_grid(model, x, labels), path, nrow=8)
    print(f"wrote {path} (rows: inputs, then their reconstructions)")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    model, config, _, run_dir = load_run_model(args)
    device = next(model.parameters()).device
    if args.images == 4:
        corners, labels = evaluation_images(config, args, 4, device, model.conditional)
        grid = interpolation_square(model, corners, args.steps, labels)
    else:
        x, y = evaluation_images(config, args, 2 * args.rows, device, model.conditional)
        a, b = slice(None, args.rows), slice(args.rows, None)
        grid = interpolation_rows(model, x[a], x[b], args.steps, *((y[a], y[b]) if y is not None else ()))
    path = output_path(args.out, run_dir, f"interpolation_{args.images}.png", IMAGE_SUFFIXES)
    save_image(grid, path, nrow=args.steps)
    print(f"wrote {path}")
    return 0
