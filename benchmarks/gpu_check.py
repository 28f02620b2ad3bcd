"""The GPU measurements, in one run that fits a short device lease.

    python benchmarks/gpu_check.py [--dry-run] [--out benchmarks/results]

1. the CUDA path of the tests (``tests/test_cuda.py``: every model kind on the GPU against the CPU,
   bf16 autocast, a few trainer steps);
2. the f-VAE and Glow of the ``mnist`` and ``celebahq64`` presets: training images/s and peak GPU
   memory in fp32, TF32 and bf16, eager;
3. normflows' Glow at fvae's celebahq64 Glow architecture, the same way (fp32 and bf16, eager),
   when normflows is installed;
4. a 3-minute f-VAE run on the embedded digits (``fvae train``) and its sample score; its grid,
   summary and evaluation are copied beside the report;
5. last, since compilation takes minutes: the celebahq64 f-VAE and Glow in bf16, compiled
   (``torch.compile``).

The report (gpu.md and gpu.json; gpu_dryrun.* for a dry run, in ``--out``) is rewritten after each
part, so that a lease that ends early still leaves what was measured. ``--dry-run`` does all of it
on the CPU at toy sizes (mnist presets, a few steps, seconds of training), so that the script is
tested where no GPU is; its numbers mean nothing.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import fvae
from fvae.training.precision import autocast_for, set_tf32

sys.path.insert(0, str(Path(__file__).parent))
from report import parser, write_report  # noqa: E402
from timing import seconds as timed, train_step  # noqa: E402

MODES = [("fp32", False, False), ("tf32", True, False), ("bf16", False, True)]


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def time_steps(loss_fn, parameters, batch: int, steps: int, device: torch.device, bf16: bool) -> dict:
    """Images/s over ``steps`` Adam steps on ``loss_fn()`` (after three untimed ones), the peak
    GPU memory and the seconds of those three warm-up steps (compilation, where compiled)."""
    def loss() -> torch.Tensor:
        with autocast_for(device, bf16):
            return loss_fn().float().mean()

    step = train_step(loss, parameters, lr=1e-5)
    warmup = sum(timed(step, 3))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    def all_steps() -> None:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seconds = timed(all_steps, 1)[0]
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"images_per_s": round(batch * steps / seconds, 1), "peak_gib": round(peak, 2),
            "warmup_s": round(warmup, 1)}


def time_training(model, batch: int, steps: int, device: torch.device, tf32: bool, bf16: bool,
                  compiled: bool) -> dict:
    """:func:`time_steps` of an fvae model's loss, eager or compiled, with TF32 on or off."""
    set_tf32(tf32)
    model = model.to(device).train()
    x = torch.rand(batch, *model.image_shape, device=device)
    step_fn = torch.compile(model) if compiled else model
    try:
        return time_steps(lambda: step_fn(x)["loss"], model.parameters(), batch, steps, device, bf16)
    finally:
        set_tf32(False)


def fvae_rows(preset: str, batch: int, steps: int, device: torch.device, modes: list[tuple],
              compiled: bool) -> list[dict]:
    """One row per model kind (f-VAE, Glow) and precision mode of ``modes``."""
    rows = []
    for kind in ("fvae", "glow"):
        for mode, tf32, bf16 in modes:
            if mode == "tf32" and device.type != "cuda":
                continue
            torch.manual_seed(0)
            model = fvae.build_model(kind, preset)
            row = {"model": f"fvae {kind}", "preset": preset, "precision": mode, "compiled": compiled,
                   "batch": batch}
            try:
                row |= time_training(model, batch, steps, device, tf32, bf16, compiled)
            except Exception as error:  # report, and go on to the next measurement
                row["error"] = f"{type(error).__name__}: {error}"[:300]
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def normflows_rows(preset: str, batch: int, steps: int, device: torch.device) -> list[dict]:
    try:
        sys.path.insert(0, str(Path(__file__).parent))
        from peers import NormflowsGlow
    except ImportError as error:
        return [{"model": "normflows glow", "error": f"not installed: {error}"}]
    config = fvae.model_config("glow", preset)
    rows = []
    for mode, _, bf16 in (MODES[0], MODES[2]):
        torch.manual_seed(0)
        try:
            glow = NormflowsGlow(config.flow_levels, config.flow_steps[0], config.flow_widths[0], config.image_shape,
                                 config.model_shape)
            glow.model.to(device)
            x = torch.rand(batch, *config.image_shape, device=device)
            row = time_steps(lambda: glow.train_loss(x), glow.parameters(), batch, steps, device, bf16)
        except Exception as error:
            row = {"error": f"{type(error).__name__}: {error}"[:300]}
        row = {"model": "normflows glow", "preset": preset, "precision": mode, "compiled": False,
               "batch": batch, **row}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def embedded_run(out: Path, stem: str, dry_run: bool, train_time: str) -> dict:
    """``fvae train`` on the embedded digits for ``train_time`` (its default precision), then
    ``fvae eval`` with the sample score and the importance-weighted bound (K = 100; skipped in a
    dry run). The run folder stays in a temporary directory; only its summary, evaluation and
    sample grid come back, the grid copied to ``out``."""
    run_dir = Path(tempfile.mkdtemp(prefix="fvae-gpu-check-")) / "run"
    limits = ["--max-steps", "5", "train.eval_batches=1"] if dry_run else ["--max-time", train_time,
                                                                          "--max-steps", "1000000"]
    train = run([sys.executable, "-m", "fvae.cli", "train", "--no-progress", "--ema", "0.999", "--out", str(run_dir),
                 *limits, "train.score_samples=0"], 900)
    result = {"returncode": train.returncode, "stderr_tail": train.stderr[-500:]}
    if train.returncode != 0:
        return result
    result["summary"] = json.loads((run_dir / "summary.json").read_text())
    evaluation = run([sys.executable, "-m", "fvae.cli", "eval", str(run_dir), "--num-samples", "0" if dry_run else "100",
                      "--score-samples", "200" if dry_run else "1000"], 600)
    if evaluation.returncode == 0:
        result["eval"] = json.loads((run_dir / "eval.json").read_text())["metrics"]
    else:
        result["eval_stderr_tail"] = evaluation.stderr[-500:]
    for grid in sorted(run_dir.glob("samples*.png"))[-1:]:
        shutil.copy(grid, out / f"{stem}_embedded_samples.png")
    return result


def main() -> None:
    p = parser(__doc__, threads=None)
    p.add_argument("--dry-run", action="store_true", help="the CPU at toy sizes: checks the script")
    p.add_argument("--train-time", default="3m", help="the embedded-digits f-VAE run's training time")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled variants (minutes of "
                                                             "compilation on a CPU)")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    sizes = [("mnist", 8, 2)] if args.dry_run else [("mnist", 64, 20), ("celebahq64", 32, 20)]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_dryrun" if args.dry_run else "gpu"
    report = {"device": device_name(device), "torch": torch.__version__, "dry_run": args.dry_run,
              "training": []}

    def save() -> None:
        write_report(args.out, stem, markdown(report), report)

    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"], 900)
    report["cuda_tests"] = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-500:]
    print("cuda tests:", report["cuda_tests"], flush=True)
    save()
    for preset, batch, steps in sizes:
        report["training"] += fvae_rows(preset, batch, steps, device, MODES, compiled=False)
    preset, batch, steps = sizes[-1]
    report["training"] += normflows_rows(preset, batch, steps, device)
    save()
    report["embedded_run"] = embedded_run(args.out, stem, args.dry_run, args.train_time)
    save()
    if not args.no_compile:
        report["training"] += fvae_rows(preset, batch, steps, device, MODES[-1:], compiled=True)
        save()


def markdown(report: dict) -> str:
    lines = [f"`python benchmarks/gpu_check.py{' --dry-run' if report['dry_run'] else ''}` on {report['device']}, "
             f"torch {report['torch']}" + (" (dry run on the CPU: the numbers mean nothing)" if report["dry_run"] else ""),
             "", f"CUDA tests: {report['cuda_tests']}", "",
             "| model | preset | precision | compiled | batch | images/s | peak GiB | warm-up s |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in report["training"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('preset', '')} | {r.get('precision', '')} | "
                         f"{r.get('compiled', '')} | | error: {r['error']} | | |")
        else:
            lines.append(f"| {r['model']} | {r['preset']} | {r['precision']} | {r['compiled']} | {r['batch']} | "
                         f"{r['images_per_s']} | {r['peak_gib']} | {r.get('warmup_s', '')} |")
    run = report.get("embedded_run")
    if run is None:
        return "\n".join(lines) + "\n"
    lines += ["", f"Embedded-digits f-VAE run: exit {run['returncode']}"]
    if "summary" in run:
        lines.append(f"steps {run['summary']['steps']}, training {run['summary']['wall_time']} s, "
                     f"test bits/dim {run['summary']['test_bpd']:.3f}")
    if "eval" in run:
        lines.append("evaluation: " + ", ".join(f"{k} {run['eval'][k]:.3f}" for k in
                                                ("iw_bpd", "fid", "precision", "recall", "recognizable", "sharpness")
                                                if isinstance(run["eval"].get(k), float)))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
