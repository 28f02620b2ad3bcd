"""What the commands that use a trained run share: its model, and its test images."""
from __future__ import annotations

import argparse

import torch

from fvae.config import RunConfig, apply_overrides
from fvae.data import dequantize, load_dataset
from fvae.training.checkpoint import load_model


def load_run_model(args: argparse.Namespace):
    """The model of ``args.path`` (a run or checkpoint folder) and the run folder it belongs to."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, config, checkpoint = load_model(args.path, use_ema=not args.no_ema, device=device)
    if getattr(args, "compile", False):  # the hot paths of sampling and of the bounds
        model.generate = torch.compile(model.generate)
        model.log_weights = torch.compile(model.log_weights)
    torch.manual_seed(args.seed)
    return model, config, checkpoint, checkpoint.parent.parent


def evaluation_split(config: RunConfig, args: argparse.Namespace):
    data = config.data
    if getattr(args, "data_root", None):
        data = apply_overrides(config, [f"data.root={args.data_root}"]).data
    return load_dataset(data, "test", config.model.image_shape)


def evaluation_images(config: RunConfig, args: argparse.Namespace, count: int, device, num_classes: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` dequantized test images in an order drawn from ``args.seed`` (all classes, not the
    first rows), and their labels on ``device`` where the model is class-conditional (else None)."""
    test_set = evaluation_split(config, args)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(test_set), generator=g).tolist()
    items = [test_set[order[i % len(order)]] for i in range(count)]
    images = dequantize(torch.stack([image for image, _ in items]), g).to(device)
    labels = torch.tensor([int(label) for _, label in items], device=device) if num_classes else None
    return images, labels
