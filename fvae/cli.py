"""The ``fvae`` command: ``fvae train``, and what to do with a trained run.

Every command takes ``--help``. Multi-process training: ``torchrun --nproc_per_node N
--no-python fvae train ...``.
"""
from __future__ import annotations

import argparse
import importlib
import re
import os
import sys

from fvae.commands.values import device, duration, integer, number, numbers, score_samples, train_field
from fvae.config import MODEL_KINDS
from fvae.data.load import NAMED
from fvae.presets import PRESETS, train_config


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (without the usage argparse prints first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train an f-VAE, a VAE or a Glow",
        description="Train a model. With no arguments: the f-VAE 'mnist' preset on the embedded MNIST-5k digits "
                    "(offline), a few CPU minutes, leaving samples_T*.png, checkpoints/, tensorboard/ and "
                    "metrics.jsonl in the run folder. Config precedence: preset < --config < flags < overrides; "
                    "an option not given keeps the preset's value (see README, Presets).")
    p.add_argument("overrides", nargs="*", metavar="section.field=value",
                   help="override any config field, e.g. model.flow_steps=8 train.lr=3e-4 (values parsed as YAML)")
    p.add_argument("--model", choices=MODEL_KINDS, default="fvae", help="which model of the preset (default: fvae)")
    p.add_argument("--preset", choices=PRESETS, default="mnist", help="named architecture and training config (default: mnist)")
    p.add_argument("--config", help="a YAML file with model/train/data sections (as the run's config.yaml)")
    p.add_argument("--data", help=f"{', '.join(NAMED)}, or an image folder path "
                                  "(default: the preset's; embedded for mnist)")
    p.add_argument("--data-root", help="where torchvision datasets live, downloaded there when absent and online "
                                       "(default: ~/.cache/fvae)")
    p.add_argument("--offline", action="store_true", help="never download datasets")
    mnist = train_config("fvae", "mnist")
    p.add_argument("--max-steps", type=train_field("max_steps"), help=f"stop after this many steps (mnist: {mnist.max_steps})")
    p.add_argument("--max-time", type=duration, help="stop after this much training time (e.g. 600, 10m, 2h; default: none)")
    p.add_argument("--seed", type=train_field("seed"), help="random seed: initialisation, data order, noise (default: 0)")
    p.add_argument("--batch-size", type=train_field("batch_size"), help=f"images per process and step (mnist: {mnist.batch_size})")
    p.add_argument("--lr", type=train_field("lr"), help=f"Adam learning rate (mnist f-VAE: {mnist.lr:g})")
    p.add_argument("--ema", dest="ema_decay", type=train_field("ema_decay"), help="keep an EMA of the weights with this decay, used for samples and evaluation "
                                                                   f"(mnist: {mnist.ema_decay:g})")
    p.add_argument("--out", help="run folder (default runs/MODEL-PRESET-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func="train.cmd_train")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends an option's default to its help, unless the help names it already or it has none."""

    def _get_help_string(self, action):
        if "default:" in (action.help or "") or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _run_parser(sub, name: str, help: str, run: str) -> argparse.ArgumentParser:
    """A command on a trained run; ``run`` names its function in :mod:`fvae.commands` (``"module.function"``)."""
    p = sub.add_parser(name, help=help, description=help, formatter_class=DefaultsHelpFormatter)
    p.add_argument("path", metavar="RUN", help="a run folder made by fvae train (its newest checkpoint), a "
                                                "checkpoint folder, a folder of fvae export, or the name of a "
                                                "model that ships with fvae (fvae-mnist, glow-fashion-mnist, ...)")
    p.add_argument("--seed", type=train_field("seed"), default=0, help="random seed")
    p.add_argument("--device", type=device, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even where EMA weights were saved")
    p.add_argument("--out", help="the folder to write into, made where missing, or for eval, reconstruct and "
                                  "interpolate a .json or picture file (default: the run folder)")
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fvae", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)

    p = _run_parser(sub, "eval", "bits/dim (ELBO, importance-weighted, exact), reconstruction error and the "
                                 "sample score on the test split; writes eval.json", "evaluate.cmd_eval")
    p.add_argument("--num-samples", type=integer(0, 100_000), default=100, help="K of the importance-weighted bound (0: skip it)")
    p.add_argument("--batch-size", type=integer(1, 1 << 16), default=64, help="test images per batch")
    p.add_argument("--max-images", type=integer(1, 1 << 30), help="evaluate on the first N test images only")
    p.add_argument("--score-samples", "--fid-samples", type=score_samples, default=1000,
                   help="samples for the sample score: FID, precision, recall, recognizable, sharpness (0: none)")
    p.add_argument("--temperature", type=number(0, 10), help="prior standard deviation of the scored samples "
                                                     "(default: the run's train.score_temperature)")
    p.add_argument("--inception", action="store_true", help="also Inception FID (needs torchmetrics[image] "
                                                            "and its weights)")
    p.add_argument("--compile", action="store_true", help="torch.compile the bounds and the decoder "
                                                          "(pays off for large K and many images)")
    p.add_argument("--data-root", help="where the run's (or --data's) torchvision dataset lives")
    p.add_argument("--data", help="another dataset of the same image shape: the model's bits/dim on its test split "
                                  "beside those on its own, per image (bpd-NAME.npy), as histograms, and the "
                                  "AUROC of bits/dim as an out-of-distribution score (eval-NAME.json)")
    p.add_argument("--offline", action="store_true", help="never download --data")

    p = _run_parser(sub, "sample", "write a PNG grid of samples per temperature", "pictures.cmd_sample")
    p.add_argument("--num", type=integer(1, 1 << 16), default=64, help="samples per temperature")
    p.add_argument("--temperatures", type=number(0, 10), nargs="+", help="prior standard deviations (default: the run's "
                                                                 "train.temperatures)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder (pays off for many samples)")
    p.add_argument("--nrow", type=integer(1, 1024), default=8, help="images per grid row")
    p.add_argument("--classes", type=integer(0, 1 << 16), nargs="+", help="a class-conditional model: the classes to draw, "
                                                          "rows of each (default: every class, a row each)")

    p = _run_parser(sub, "reconstruct", "test images beside their reconstructions decode(encode(x))", "pictures.cmd_reconstruct")
    p.add_argument("--num", type=integer(1, 4096), default=32, help="test images")
    p.add_argument("--data-root", help="where the run's torchvision dataset lives, if moved")

    p = _run_parser(sub, "interpolate", "interpolate in z between test images, rows of --steps", "pictures.cmd_interpolate")
    p.add_argument("--images", type=int, choices=(2, 4), default=2,
                   help="2: one pair a row; 4: a square between four corners")
    p.add_argument("--rows", type=integer(1, 1024), default=8, help="pairs, with --images 2")
    p.add_argument("--steps", type=integer(2, 1024), default=9, help="images a row")
    p.add_argument("--data-root", help="where the run's torchvision dataset lives, if moved")

    p = _run_parser(sub, "transfer", "each image under every class of a class-conditional model: the same hand, "
                                     "another class (a grid, a row an image)", "edits.cmd_transfer")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders of them, or .npy/.npz/.pt arrays")
    p.add_argument("--classes", type=integer(0, 1 << 16), nargs="+",
                   help="each image's class (default: the class the model reads in it)")
    p.add_argument("--to", type=integer(0, 1 << 16), nargs="+", help="the target classes (default: every class)")
    p.add_argument("--temperature", type=number(0, 10), default=0.8,
                   help="scale of the image's noise under the target class (1: its exact place; lower: nearer "
                        "the class's typical shape)")

    p = _run_parser(sub, "edit", "walk images along the latent direction from the images --from to the images --to "
                                 "(a grid, a row an image)", "edits.cmd_edit")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders of them, or .npy/.npz/.pt arrays")
    p.add_argument("--from", dest="source", required=True, help="images without the attribute (a folder or array)")
    p.add_argument("--to", dest="target", required=True, help="images with it (a folder or array)")
    p.add_argument("--strengths", type=numbers(-100, 100), default=[-1.0, 0.0, 1.0, 2.0],
                   help="comma-separated multiples of the direction, a column each (default: -1,0,1,2)")
    p._negative_number_matcher = re.compile(r"^-[\d.][\d.,eE+-]*$")  # so "--strengths -1,0,1" reads as a value

    _run_parser(sub, "export", "write a run's model as a Hugging Face folder (config.json, model.safetensors, "
                               "README.md): EMA weights where kept", "folders.cmd_export")

    p = sub.add_parser(
        "score", formatter_class=DefaultsHelpFormatter,
        help="score images against a dataset's test split: FID, precision, recall, recognizable, sharpness",
        description="Score a set of images (any generator's) against the test split of a dataset, in the "
                    "features of a judge trained on its labelled training split: FID, k-NN precision and "
                    "recall, the share of images the judge recognizes, and sharpness against the test split "
                    "(see docs/score.md).")
    p.add_argument("path", metavar="PATH", help="a folder of image files, or a .npy/.npz/.pt array of shape "
                                                "(N, H, W) or (N, C, H, W), uint8 or float in [0, 1]")
    p.add_argument("--data", default="embedded", help="the dataset whose test split is the reference")
    p.add_argument("--data-root", help="where torchvision datasets live (default: ~/.cache/fvae)")
    p.add_argument("--offline", action="store_true", help="never download datasets")
    p.add_argument("--inception", action="store_true", help="also Inception FID (needs torchmetrics[image] "
                                                            "and its weights)")
    p.add_argument("--labels", help="the class each image was drawn for (.npy, .pt, or one integer a line): "
                                    "adds class_accuracy, the share the judge reads as that class")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.set_defaults(func="evaluate.cmd_score")

    p = sub.add_parser(
        "prepare", formatter_class=DefaultsHelpFormatter,
        help="crop and resize a dataset once into memory-mapped arrays, for a data path that keeps up with a GPU",
        description="Decode, crop and resize every image of a dataset (an image folder or a torchvision name) "
                    "once, to the preset's size, into uint8 arrays that training reads memory-mapped: "
                    "fvae train --data OUT.")
    p.add_argument("data", help="an image folder path, or mnist, fashion-mnist, cifar10, celeba")
    p.add_argument("--preset", choices=PRESETS, default="celebahq64", help="whose image size to prepare for")
    p.add_argument("--out", required=True, help="the folder to write (must not exist)")
    p.add_argument("--data-root", help="where torchvision datasets live (default: ~/.cache/fvae)")
    p.add_argument("--offline", action="store_true", help="never download datasets")
    p.add_argument("--workers", type=integer(1, 256), default=min(8, os.cpu_count() or 1), help="decoding processes")
    p.set_defaults(func="folders.cmd_prepare")

    p = sub.add_parser("compare", help="table and plots of bits/dim and FID against steps and time for runs",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders made by fvae train")
    p.add_argument("--out", default="comparison", help="folder for comparison.{md,json,png}")
    p.set_defaults(func="compare.cmd_compare")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors a user can cause (:class:`fvae.errors.FvaeError`) end in one line on
    stderr and their exit code: 2 for bad input (config, data, checkpoints, a run folder in use),
    1 for a run that failed."""
    from fvae.errors import FvaeError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a value refused as the command line was parsed (one line said)
        return done.code
    args.command_line = " ".join(["fvae", *(sys.argv[1:] if argv is None else map(str, argv))])
    module, function = args.func.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(f"fvae.commands.{module}"), function)(args)
    except FvaeError as error:
        print(f"fvae {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"fvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not the user's input: one line, the traceback on request
        if os.environ.get("FVAE_TRACEBACK"):
            raise
        print(f"fvae {args.command}: internal error: {type(error).__name__}: {error} "
              f"(set FVAE_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
