"""Training and sampling images/s of fvae's Glow against normflows' Glow at the same
architecture, and the time of each coupling-network convolution in NCHW and channels-last.

    pip install -e ".[bench]"
    python benchmarks/flow_speed.py [--rounds 20] [--threads 2] [--batch 64] [--sample-batch 250]

Both Glows are the mnist ``glow`` preset's architecture (L = 2, K = 12, width 96, affine
coupling, see peers.py). They are timed in one process, one step of each in turn, so that
both see the same machine load (on a shared machine the speed of either drifts by 30% from
one minute to the next); medians are reported. A training step is forward, backward and a
fused Adam update on one batch of dequantized training digits. Writes
benchmarks/results/flow_speed.{md,json}.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from peers import build  # noqa: E402
from report import command_line, markdown_table, parser, write_report  # noqa: E402
from timing import alternating_medians, seconds, train_step  # noqa: E402

import fvae  # noqa: E402
from fvae.data import dequantize, embedded_mnist  # noqa: E402

MODELS = ("glow", "normflows_glow")


def glow_speeds(rounds: int, batch: int, sample_batch: int) -> dict[str, dict[str, float]]:
    """Median training and sampling images/s of each model, measured in alternation."""
    images = embedded_mnist("train").tensors[0]
    g = torch.Generator().manual_seed(0)
    x = dequantize(images[torch.randperm(len(images), generator=g)[:batch]], g)
    adapters, steps, samplers = {}, {}, {}
    for name in MODELS:
        torch.manual_seed(0)
        adapter = adapters[name] = build(name)
        with torch.no_grad():
            adapter.train_loss(x)  # data-dependent initialisation
        steps[name] = train_step(lambda adapter=adapter: adapter.train_loss(x), adapter.parameters(), 1e-3)
        samplers[name] = lambda adapter=adapter: adapter.sample(sample_batch)
        seconds(steps[name], 3)  # warm-up
        seconds(samplers[name], 1)
    train = alternating_medians(steps, rounds)
    sample = alternating_medians(samplers, max(3, rounds // 2))
    return {name: {"train_images_per_s": round(batch / train[name], 1),
                   "sample_images_per_s": round(sample_batch / sample[name], 1)}
            for name in MODELS}


def coupling_conv_shapes() -> list[tuple[int, int, int, int]]:
    """``(in, out, kernel, size)`` of the three convolutions of each level's coupling network
    in the mnist Glow preset."""
    cfg = fvae.model_config("glow", "mnist")
    c, h, _ = cfg.model_shape
    shapes = []
    for _ in range(cfg.flow_levels):
        c, h = 4 * c, h // 2
        half = c // 2
        shapes += [(half, cfg.flow_widths[0], 3, h), (cfg.flow_widths[0], cfg.flow_widths[0], 1, h),
                   (cfg.flow_widths[0], 2 * (c - half), 3, h)]
        c = half
    return shapes


def conv_times(batch: int, repeats: int) -> list[dict]:
    """Forward and forward+backward milliseconds of each coupling convolution per memory format."""
    rows = []
    for cin, cout, k, size in coupling_conv_shapes():
        row = {"conv": f"{cin}->{cout} {k}x{k} at {size}x{size}"}
        for fmt_name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            x = torch.randn(batch, cin, size, size).contiguous(memory_format=fmt).requires_grad_()
            w = torch.randn(cout, cin, k, k, requires_grad=True)
            b = torch.zeros(cout, requires_grad=True)
            grad = torch.randn(batch, cout, size, size).contiguous(memory_format=fmt)
            forward = lambda: F.conv2d(x, w, b, padding=k // 2)  # noqa: E731
            seconds(forward, 3)
            row[f"{fmt_name}_fwd_ms"] = round(1e3 * statistics.median(seconds(forward, repeats)), 3)
            both = lambda: forward().backward(grad)  # noqa: E731
            seconds(both, 3)
            row[f"{fmt_name}_fwd_bwd_ms"] = round(1e3 * statistics.median(seconds(both, repeats)), 3)
        rows.append(row)
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=20, help="timed training steps per model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--sample-batch", type=int, default=250)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    speeds = glow_speeds(args.rounds, args.batch, args.sample_batch)
    ratios = {key: round(speeds["glow"][key] / speeds["normflows_glow"][key], 2)
              for key in ("train_images_per_s", "sample_images_per_s")}
    convs = conv_times(args.batch, 2 * args.rounds)
    models = [{"model": name, **s} for name, s in speeds.items()]
    models.append({"model": "fvae / normflows", **{k: f"{v}x" for k, v in ratios.items()}})
    text = (f"`{command_line()}` ({args.threads} threads, batch {args.batch}, sampling {args.sample_batch} at a time, "
            f"torch {torch.__version__})\n\n"
            + markdown_table(models, ["model", "train_images_per_s", "sample_images_per_s"],
                             headers={"train_images_per_s": "train images/s", "sample_images_per_s": "sample images/s"})
            + "\n\n" + markdown_table(convs, ["conv", "nchw_fwd_ms", "nchw_fwd_bwd_ms", "channels_last_fwd_ms",
                                               "channels_last_fwd_bwd_ms"],
                                       headers={"conv": f"coupling convolution (batch {args.batch})",
                                                "nchw_fwd_ms": "NCHW fwd ms", "nchw_fwd_bwd_ms": "NCHW fwd+bwd ms",
                                                "channels_last_fwd_ms": "channels-last fwd ms",
                                                "channels_last_fwd_bwd_ms": "channels-last fwd+bwd ms"}))
    write_report(args.out, "flow_speed", text, {"models": speeds, "ratios": ratios, "coupling_convs": convs,
                                                "batch": args.batch, "sample_batch": args.sample_batch})


if __name__ == "__main__":
    main()
