"""What the commands that use a trained run share: its model, and its test images."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from fvae.config import RunConfig, apply_overrides
from fvae.data import dequantize, load_dataset
from fvae.data.batches import readable_batches
from fvae.errors import InputError
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
        torch.manual_seed(args.seed)
        return model, config, folder, Path.cwd() / folder.name
    model, config, checkpoint = load_model(args.path, use_ema=not args.no_ema, device=device)
    if getattr(args, "compile", False):  # the hot paths of sampling and of the bounds
        model.generate = torch.compile(model.generate)
        model.log_weights = torch.compile(model.log_weights)
    torch.manual_seed(args.seed)
    return model, config, checkpoint, checkpoint.parent.parent


def writable_folder(folder: Path, flag: str = "--out") -> Path:
    """``folder``, made where missing, checked to be a folder this process can write into: an
    :class:`InputError` (exit 2) otherwise, before any work is done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{flag} {folder}: a file is in the way of this folder") from None
    except OSError as error:
        raise InputError(f"{flag} {folder}: cannot make this folder ({error.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {folder}: this folder is not writable")
    return folder


def output_path(out: str | None, run_dir: Path, name: str, suffixes: tuple[str, ...]) -> Path:
    """Where a command writes its file ``name``: into the run folder, into the folder ``--out``, or, where
    ``--out`` ends in one of ``suffixes``, to that file. Checked before any work (:func:`writable_folder`;
    a folder in the file's place is refused too)."""
    path = run_dir / name if out is None else Path(out)
    if out is not None and path.suffix.lower() not in suffixes:
        path = path / name
    writable_folder(path.parent)
    if path.is_dir():
        raise InputError(f"--out {path}: a folder is in the way of this file")
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
    batches = list(readable_batches(test_set, [order[i % len(order)] for i in range(count)], count))
    images = dequantize(batches[0][0], g).to(device)
    labels = batches[0][1].to(device) if num_classes else None
    return images, labels
