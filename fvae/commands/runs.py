"""What the commands that use a trained run share: its model, and its test images."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fvae.config import RunConfig, apply_overrides
from fvae.data import dequantize, load_dataset
from fvae.models.hub import from_pretrained, pretrained_folder
from fvae.training.checkpoint import load_model


def load_run_model(args: argparse.Namespace):
    """The model of ``args.path`` and where to write about it: a run or checkpoint folder (its run
    folder), or a pretrained model, shipped by name or a folder of ``fvae export`` (``./NAME``,
    never the model's own folder). Returns ``(model, config, checkpoint or model folder, folder)``."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = pretrained_folder(args.path)
    if folder is not None:
        model = from_pretrained(folder, map_location=device)
        config = RunConfig.load_yaml(folder / "config.yaml") if (folder / "config.yaml").exists() \
            else RunConfig(model=model.config)
        out = Path.cwd() / folder.name
        out.mkdir(exist_ok=True)
        torch.manual_seed(args.seed)
        return model, config, folder, out
    model, config, checkpoint = load_model(args.path, use_ema=not args.no_ema, device=device)
    if getattr(args, "compile", False):  # the hot paths of sampling and of the bounds
        model.generate = torch.compile(model.generate)
        model.log_weights = torch.compile(model.log_weights)
    torch.manual_seed(args.seed)
    return model, config, checkpoint, checkpoint.parent.parent


def output_path(out: str | None, run_dir: Path, name: str, suffixes: tuple[str, ...]) -> Path:
    """Where a command writes its file ``name``: into the run folder, into the folder ``--out``, or, where
    ``--out`` ends in one of ``suffixes``, to that file; the folder is made where it is missing."""
    if out is None:
        return run_dir / name
    path = Path(out)
    if path.suffix.lower() not in suffixes:
        path = path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_step(checkpoint: Path) -> int | None:
    """The step of a checkpoint folder (``step-00001500``); None for a pretrained model's folder."""
    name = checkpoint.name
    return int(name.split("-")[-1]) if name.startswith("step-") else None


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
