"""Image grids a user looks at, and the commands that write them: ``fvae sample``,
``fvae reconstruct``, ``fvae interpolate``."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.utils import save_image

from fvae.commands.runs import evaluation_images, load_run_model
from fvae.models import LatentFlowModel


@torch.no_grad()
def reconstruction_grid(model: LatentFlowModel, x: torch.Tensor) -> torch.Tensor:
    """Inputs and their reconstructions ``decode(encode(x))`` interleaved by rows of 8:
    ``(2B, C, H, W)`` with rows input, reconstruction, input, ..."""
    recon = model.decode(model.encode(x))
    rows = []
    for i in range(0, len(x), 8):
        rows += [x[i:i + 8].clamp(0, 1), recon[i:i + 8]]
    return torch.cat(rows)


@torch.no_grad()
def interpolation_rows(model: LatentFlowModel, a: torch.Tensor, b: torch.Tensor, steps: int = 9) -> torch.Tensor:
    """For each pair ``(a_i, b_i)``, ``steps`` images decoded along ``z = (1-t) z_a + t z_b``:
    ``(B * steps, C, H, W)``, one pair a row."""
    za, zb = model.encode(a), model.encode(b)
    t = torch.linspace(0, 1, steps, device=za.device).view(1, steps, *[1] * (za.dim() - 1))
    z = (1 - t) * za[:, None] + t * zb[:, None]
    return model.decode(z.flatten(0, 1))


@torch.no_grad()
def interpolation_square(model: LatentFlowModel, corners: torch.Tensor, steps: int = 9) -> torch.Tensor:
    """Bilinear interpolation in ``z`` between four images (top-left, top-right, bottom-left,
    bottom-right): ``(steps * steps, C, H, W)``, row by row."""
    z = model.encode(corners)
    t = torch.linspace(0, 1, steps, device=z.device)
    grid = []
    for r in t:
        left, right = (1 - r) * z[0] + r * z[2], (1 - r) * z[1] + r * z[3]
        grid += [(1 - c) * left + c * right for c in t]
    return model.decode(torch.stack(grid))


def cmd_sample(args: argparse.Namespace) -> int:
    model, config, _, run_dir = load_run_model(args)
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    for t in args.temperatures or config.train.temperatures:
        images = model.sample(args.num, temperature=t)
        path = out / f"samples_T{t:g}.png"
        save_image(images, path, nrow=args.nrow)
        print(f"wrote {path}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    model, config, _, run_dir = load_run_model(args)
    x = evaluation_images(config, args, args.num, next(model.parameters()).device)
    path = Path(args.out) if args.out else run_dir / "reconstructions.png"
    save_image(reconstruction_grid(model, x), path, nrow=8)
    print(f"wrote {path} (rows: inputs, then their reconstructions)")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    model, config, _, run_dir = load_run_model(args)
    device = next(model.parameters()).device
    if args.images == 4:
        grid = interpolation_square(model, evaluation_images(config, args, 4, device), args.steps)
    else:
        x = evaluation_images(config, args, 2 * args.rows, device)
        grid = interpolation_rows(model, x[: args.rows], x[args.rows:], args.steps)
    path = Path(args.out) if args.out else run_dir / f"interpolation_{args.images}.png"
    save_image(grid, path, nrow=args.steps)
    print(f"wrote {path}")
    return 0
