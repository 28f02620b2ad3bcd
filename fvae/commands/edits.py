"""Editing images in latent space: ``fvae transfer`` (an image under another class) and
``fvae edit`` (an image walked along the direction between two sets of images).

    fvae transfer runs/cond my_digits/ --out transfer.png          # rows: image, then each class
    fvae edit fvae-mnist --from thin/ --to thick/ my_digits/ --strengths -1,0,1,2 --out edit.png

Images are files, folders of image files, or ``.npy``/``.npz``/``.pt`` arrays, of the model's shape.
"""
from __future__ import annotations

import argparse

import torch
from torchvision.utils import save_image

from fvae.commands.pictures import IMAGE_SUFFIXES
from fvae.commands.runs import load_run_model, output_path
from fvae.data.arrays import load_images
from fvae.errors import InputError
from fvae.models import LatentFlowModel


def read_inputs(paths: list[str], model: LatentFlowModel) -> torch.Tensor:
    """The images of every path (an image file, a folder of them, an array), ``(N, C, H, W)`` in
    ``[0, 1)`` on the model's device, checked against the model's image shape."""
    batches = []
    for path in paths:
        batches.append(load_images(path, model.image_shape[0]))
        if tuple(batches[-1].shape[1:]) != model.image_shape:
            raise InputError(f"{path}: images of shape {tuple(batches[-1].shape[1:])}, the model takes "
                             f"{model.image_shape}")
    x = torch.cat(batches).clamp(0, 1 - 1 / 512)  # dequantized values lie below 1
    return x.to(next(model.parameters()).device)


def cmd_transfer(args: argparse.Namespace) -> int:
    model, _, _, run_dir = load_run_model(args)
    path = output_path(args.out, run_dir, "transfer.png", IMAGE_SUFFIXES)
    if not model.num_classes:
        raise InputError(f"{args.path} is not class-conditional: transfer needs model.num_classes > 0")
    x = read_inputs(args.images, model)
    torch.manual_seed(args.seed)
    if args.classes is None:
        labels = model.classify(x)
        print(f"classes read by the model: {' '.join(map(str, labels.tolist()))}")
    elif len(args.classes) != len(x):
        raise InputError(f"--classes gives {len(args.classes)} classes for {len(x)} images")
    else:
        labels = torch.tensor(args.classes, device=x.device)
    targets = list(range(model.num_classes)) if args.to is None else args.to
    grid = torch.cat([x[:, None], model.transfer(x, labels, targets, args.temperature)], 1)
    save_image(grid.flatten(0, 1), path, nrow=grid.shape[1])
    print(f"wrote {path} (a row an image: the image, then it under class {', '.join(map(str, targets))})")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    model, _, _, run_dir = load_run_model(args)
    path = output_path(args.out, run_dir, "edit.png", IMAGE_SUFFIXES)
    if model.num_classes:
        raise InputError(f"{args.path} is class-conditional; edit works on unconditional models "
                         f"(use fvae transfer to change the class)")
    a, b = read_inputs([args.source], model), read_inputs([args.target], model)
    x = read_inputs(args.images, model)
    direction = model.latent_direction(a, b)
    grid = model.edit(x, direction, args.strengths)
    save_image(grid.flatten(0, 1), path, nrow=len(args.strengths))
    print(f"wrote {path} (a row an image, at strengths {', '.join(f'{s:g}' for s in args.strengths)}; "
          f"0 is its reconstruction)")
    return 0
