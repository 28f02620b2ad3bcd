"""fvae's f-VAE, VAE and Glow against normflows' Glow and pythae's VAE and VAE_IAF, on the
embedded MNIST-5k split, each trained for the same wall-clock budget, then evaluated alike.

    pip install -e ".[bench]"
    python benchmarks/compare_peers.py [--budget 8m] [--threads 2] [--batch 64] [--models ...]

Every model sees the same data (the embedded split: 4,000 training and 1,000 test digits),
the same uniform dequantization ``x = (k + U) / 256`` and batch size; fvae's models train as
``fvae train`` trains them (their presets' learning rate, warm-up and EMA), the peers with Adam
at --lr on their own libraries' objectives. All are scored with the same formula
``bpd = (nats + D ln 256) / (D ln 2)``: exact for flows, the
importance-weighted bound (K = --iw-samples) and the ELBO for VAEs. Samples are scored alike
by fvae's sample score (fvae.scoring.score: FID, precision, recall, recognizable, in the features of the
shipped digit judge), at T = 1 and, for fvae's models, at their preset's sampling temperature.
Writes benchmarks/results/peers.{md,json} and a sample grid per model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

sys.path.insert(0, str(Path(__file__).parent))
from peers import FvaeAdapter, build, count_parameters  # noqa: E402

import fvae  # noqa: E402
from fvae.cli import parse_duration  # noqa: E402
from fvae.data import dequantize, embedded_mnist  # noqa: E402
from fvae.presets import run_config  # noqa: E402
from fvae.scoring.metrics import bits_per_dim  # noqa: E402
from fvae.scoring.score import SCORE_KEYS, scorer_for  # noqa: E402

MODELS = ("fvae", "vae", "glow", "normflows_glow", "pythae_vae", "pythae_vae_iaf")
SWEEP = (1.0, 0.8, 0.6)
RESULTS = Path(__file__).with_name("results")


def batches_forever(images: torch.Tensor, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order) - batch + 1, batch):
            yield dequantize(images[order[i:i + batch]], g)


def train_fvae(name: str, budget: float, batch: int, seed: int, work: Path) -> tuple[FvaeAdapter, dict]:
    """One of fvae's models trained as ``fvae train`` trains it (its preset's learning rate, warm-up
    and EMA), for ``budget`` seconds of training time; the adapter holds the EMA weights."""
    config = run_config(name, "mnist")
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, batch_size=batch, seed=seed, max_steps=10 ** 9, max_time=budget, checkpoint_every=10 ** 9,
        sample_every=10 ** 9, log_every=10 ** 9, score_samples=0, eval_batches=1))
    model, summary = fvae.train(config=config, out=work / name, progress=False)
    adapter = FvaeAdapter(name)
    adapter.model = model
    return adapter, {"steps": summary["steps"], "skipped_steps": summary["skipped_steps"],
                     "train_seconds": summary["wall_time"], "lr": config.train.lr,
                     "ema": config.train.ema_decay,
                     "train_images_per_s": round(summary["steps"] * batch / summary["wall_time"], 1)}


def train_for(adapter, images, budget: float, batch: int, lr: float, seed: int) -> dict:
    """Adam on the model's own objective until ``budget`` seconds have passed."""
    data = batches_forever(images, batch, seed)
    with torch.no_grad():
        adapter.train_loss(next(data))  # data-dependent initialisation (ActNorm), not timed
    optimizer = torch.optim.Adam(adapter.parameters(), lr=lr, fused=True)
    steps, skipped, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        loss = adapter.train_loss(next(data))
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter.parameters(), 10.0)
            optimizer.step()
        else:
            skipped += 1
        steps += 1
    seconds = time.perf_counter() - start
    return {"steps": steps, "skipped_steps": skipped, "train_seconds": round(seconds, 1), "lr": lr,
            "train_images_per_s": round(steps * batch / seconds, 1)}


def evaluate(adapter, test_images, num_samples: int, seed: int) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    sums, n = {}, 0
    for i in range(0, len(test_images), 50):
        x = dequantize(test_images[i:i + 50], g)
        for key, nats in adapter.nll(x, num_samples).items():
            sums[key] = sums.get(key, 0.0) + nats.sum().item()
        n += len(x)
    return {f"{key}_bpd": round(bits_per_dim(total / n, 784), 4) for key, total in sums.items()}


def sample_speed_and_score(adapter, scorer, num: int, seed: int, temperature: float = 1.0
                           ) -> tuple[dict, torch.Tensor]:
    """Sampling images/s and the sample score of ``num`` samples at ``temperature``. Samples that
    are not finite (a sampler that overflowed) are counted and scored as blank images."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    samples = torch.cat([adapter.sample(min(250, num - i), temperature) for i in range(0, num, 250)])
    seconds = time.perf_counter() - start
    score = scorer.score(samples)
    row = {"sample_images_per_s": round(num / seconds, 1), **{k: round(score[k], 4) for k in SCORE_KEYS},
           "nonfinite_samples": score["nonfinite"], "temperature": temperature}
    return row, samples.nan_to_num(0.0).clamp(0, 1)


def table(rows: list[dict]) -> str:
    cols = ["model", "parameters", "steps", "train_images_per_s", "sample_images_per_s", "exact_bpd", "iw_bpd",
            "elbo_bpd", "temperature", *SCORE_KEYS, "nonfinite_samples"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    sweep = ["| model | " + " | ".join(f"T={t:g}: fid / recognizable" for t in SWEEP) + " |",
             "|---|" + "---|" * len(SWEEP)]
    for r in rows:
        cells = [f"{r['by_temperature'][f'{t:g}']['fid']:.1f} / {r['by_temperature'][f'{t:g}']['recognizable']:.3f}"
                 for t in SWEEP]
        sweep.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(sweep)


def own_temperature(name: str) -> float:
    """The temperature a model is sampled at by default: its preset's for fvae's models, 1 for the peers."""
    return run_config(name, "mnist").train.score_temperature if name in ("fvae", "vae", "glow", "composite") else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=parse_duration, default=480.0, help="training wall time per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="the peers' learning rate (fvae's models use "
                                                                  "their presets')")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--iw-samples", type=int, default=100)
    parser.add_argument("--score-samples", "--fid-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_images, test_images = embedded_mnist("train").tensors[0], embedded_mnist("test").tensors[0]
    scorer = scorer_for("embedded", None, embedded_mnist("test"), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="fvae-peers-"))
    for name in args.models:
        torch.manual_seed(args.seed)
        adapter = build(name)
        row = {"model": name, "parameters": count_parameters(adapter)}
        print(f"== {name}: {row['parameters']:,} parameters, training for {args.budget:.0f} s", flush=True)
        if isinstance(adapter, FvaeAdapter):
            adapter, trained = train_fvae(name, args.budget, args.batch, args.seed, work)
            row |= trained
        else:
            row |= train_for(adapter, train_images, args.budget, args.batch, args.lr, args.seed)
        if hasattr(adapter, "fit_sigma"):
            g = torch.Generator().manual_seed(args.seed)
            adapter.fit_sigma(dequantize(train_images[i:i + 200], g) for i in range(0, 2000, 200))
        row |= evaluate(adapter, test_images, args.iw_samples, args.seed)
        speed, samples = sample_speed_and_score(adapter, scorer, args.score_samples, args.seed, own_temperature(name))
        row |= speed
        row["by_temperature"] = {
            f"{t:g}": {k: v for k, v in sample_speed_and_score(adapter, scorer, args.score_samples, args.seed, t)[0]
                       .items() if k in SCORE_KEYS} for t in SWEEP}
        save_image(samples[:64], args.out / f"peers_samples_{name}.png", nrow=8)
        print(json.dumps(row), flush=True)
        rows.append(row)
        write_results(args, rows, scorer.name)


def write_results(args: argparse.Namespace, rows: list[dict], features: str) -> None:
    """peers.{md,json} for the models done so far (rewritten after each, so a crash keeps them)."""
    by_name = {r["model"]: r for r in rows}
    speedups = {}
    if "glow" in by_name and "normflows_glow" in by_name:
        for key in ("train_images_per_s", "sample_images_per_s"):
            speedups[f"glow_vs_normflows_{key}"] = round(by_name["glow"][key] / by_name["normflows_glow"][key], 2)
    command = "python benchmarks/compare_peers.py " + " ".join(sys.argv[1:])
    text = (f"`{command}` (budget {args.budget:.0f} s per model, {args.threads} threads, batch {args.batch}, "
            f"Adam {args.lr}, torch {torch.__version__})\n\n{table(rows)}\n\n"
            + "".join(f"- {k}: {v}x\n" for k, v in speedups.items())
            + f"\nbpd: exact for flows; IW bound (K = {args.iw_samples}) and ELBO for VAEs. Sample score "
              f"(fvae.scoring.score, features {features}) of {args.score_samples} samples at each model's own "
              f"temperature (fvae's models: the preset's; peers: 1), then at every temperature of the sweep.\n")
    print(text, flush=True)
    meta = {"command": command, "features": features, "budget_s": args.budget, "threads": args.threads, "batch": args.batch,
            "lr": args.lr, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine()}
    (args.out / "peers.json").write_text(json.dumps({"meta": meta, "rows": rows, "speedups": speedups}, indent=2))
    (args.out / "peers.md").write_text(text)


if __name__ == "__main__":
    main()
