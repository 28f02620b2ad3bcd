"""Is the data path or the model the bottleneck? Images/s of the data path alone, next to the
model's own training images/s.

    python benchmarks/data_speed.py [--images 200] [--workers 0 2] [--presets celebahq64 celebahq128]

On generated 1024x1024 JPEGs (smooth colour fields with noise, the size of CelebA-HQ's files),
for each preset: the raw image folder (decode, centre-crop, resize at every step) and the folder
made by ``fvae prepare`` (memory-mapped uint8), each read through the training loop's own
loader (fvae.data.batches.EpochBatches) with every ``--workers`` count; then one training step of
the preset's f-VAE timed on this CPU, and its rate on a GPU estimated from its FLOPs (no GPU
here): FLOPs per image (torch.utils.flop_counter, forward and backward) against an H100's dense
bf16 peak (989 TFLOP/s) at an assumed 40% utilisation, a generous figure for these networks,
so that the estimate errs towards a hungrier model. Writes benchmarks/results/data_speed.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import fvae
from fvae.config import DataConfig
from fvae.data import load_dataset
from fvae.data.batches import EpochBatches
from fvae.data.prepared import prepare
from fvae.presets import MODEL_PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from timing import seconds as timed, train_step  # noqa: E402
from report import command_line, markdown_table, parser, write_report  # noqa: E402

H100_BF16_DENSE = 989e12
ASSUMED_UTILISATION = 0.4


def write_jpegs(folder: Path, count: int, size: int = 1024, seed: int = 0) -> None:
    """``count`` JPEGs of ``size x size``: smooth random colour fields plus pixel noise."""
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    for i in range(count):
        coarse = g.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(field + g.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:05d}.jpg", quality=90)


def loader_rate(dataset, batch: int, workers: int, seconds: float) -> float:
    """Images/s through the training loop's loader, for at least ``seconds`` (after one batch)."""
    batches = EpochBatches(dataset, batch, seed=0, num_workers=workers)
    stream = batches.from_step(0)
    next(stream)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, images, _, _ = next(stream)
        count += len(images)
    return count / (time.perf_counter() - start)


def model_rates(preset: str, batch: int) -> dict:
    """The f-VAE's training images/s on this CPU and FLOPs per image."""
    model = fvae.build_model("fvae", preset)
    x = torch.rand(batch, *model.image_shape)
    step = train_step(lambda: model.loss(x).mean(), model.parameters(), lr=1e-5)
    step()
    with FlopCounterMode(display=False) as counter:
        model.loss(x).mean().backward()
    seconds = min(timed(step, 1))
    flops_per_image = counter.get_total_flops() / batch
    gpu_rate = H100_BF16_DENSE * ASSUMED_UTILISATION / flops_per_image
    return {"cpu_train_images_per_s": batch / seconds, "gflop_per_image": flops_per_image / 1e9,
            "gpu_train_images_per_s_estimate": gpu_rate}


def main() -> None:
    p = parser(__doc__, threads=None)
    p.add_argument("--images", type=int, default=200, help="generated 1024x1024 JPEGs")
    p.add_argument("--workers", type=int, nargs="+", default=[0, os.cpu_count() or 1])
    p.add_argument("--presets", nargs="+", default=["celebahq64", "celebahq128"])
    p.add_argument("--seconds", type=float, default=10.0, help="how long each loader is read")
    p.add_argument("--batch", type=int, default=32, help="images per loader batch (at most the images)")
    args = p.parse_args()
    args.batch = min(args.batch, int(args.images * 0.9))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpegs"
        write_jpegs(folder, args.images)
        for preset in args.presets:
            shape = MODEL_PRESETS[preset]["fvae"].image_shape
            started = time.perf_counter()
            splits = {split: load_dataset(DataConfig(str(folder)), split, shape) for split in ("train", "test")}
            prepare(splits, str(folder), shape, Path(tmp) / preset, workers=max(args.workers), progress=False)
            row = {"preset": preset, "image_shape": list(shape),
                   "prepare_images_per_s": args.images / (time.perf_counter() - started)}
            for workers in args.workers:
                raw = load_dataset(DataConfig(str(folder)), "train", shape)
                ready = load_dataset(DataConfig(str(Path(tmp) / preset)), "train", shape)
                row[f"folder_images_per_s_w{workers}"] = loader_rate(raw, args.batch, workers, args.seconds)
                row[f"prepared_images_per_s_w{workers}"] = loader_rate(ready, args.batch, workers, args.seconds)
            row |= model_rates(preset, batch=2)
            best_prepared = max(row[f"prepared_images_per_s_w{w}"] for w in args.workers)
            row["prepared_over_gpu_estimate"] = best_prepared / row["gpu_train_images_per_s_estimate"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    write(args, rows)


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    cols = ([f"folder_images_per_s_w{w}" for w in args.workers] + [f"prepared_images_per_s_w{w}" for w in args.workers]
            + ["prepare_images_per_s", "cpu_train_images_per_s", "gflop_per_image", "gpu_train_images_per_s_estimate",
               "prepared_over_gpu_estimate"])
    text = (f"`{command_line()}` ({os.cpu_count()} CPUs, torch {torch.__version__}); `_wN`: N loader worker processes. "
            f"GPU rate: an estimate from FLOPs (H100 dense bf16 {H100_BF16_DENSE / 1e12:.0f} TFLOP/s at "
            f"{ASSUMED_UTILISATION:.0%}), no GPU measured.\n\n"
            + markdown_table(rows, ["preset", *cols], formats={c: ",.1f" for c in cols}))
    write_report(args.out, "data_speed", text, {"rows": rows, "h100_bf16_dense": H100_BF16_DENSE,
                                                "assumed_utilisation": ASSUMED_UTILISATION})


if __name__ == "__main__":
    main()
