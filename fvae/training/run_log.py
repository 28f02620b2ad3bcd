"""What a training run writes besides checkpoints: scalars and images for its tracker (TensorBoard,
or MLflow: :mod:`fvae.training.trackers`), the sample grids ``samples_T*.png``, ``metrics.jsonl``
(one line per evaluation) and ``summary.json``.

Only the main process writes; the others hold a :class:`RunLog` that does nothing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from fvae.scoring.metrics import bits_per_dim
from fvae.scoring.score import CLASS_SCORE_KEYS, SCORE_KEYS
from fvae.training.trackers import make_tracker


def append_record(path: Path, record: dict) -> None:
    """One JSON line at the end of ``path``, on a line of its own even after a torn last line."""
    torn = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict]:
    """The JSON lines of ``path`` (none where it is missing); a line that is not whole JSON (the last
    one, cut short when a process was killed mid-write) is left out and counted on stderr."""
    if not path.exists():
        return []
    records, broken = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:
            broken += 1
            continue
        if isinstance(record, dict):
            records.append(record)
    if broken:
        print(f"note: {path}: left out {broken} line(s) that are not whole JSON records", file=sys.stderr)
    return records


class RunLog:
    """The run folder's logs. ``active`` is False on every process but the main one; ``logger``
    names the tracker (``train.logger``), which also gets the run's ``config`` (a plain dict)."""

    def __init__(self, run_dir: Path, active: bool, logger: str = "tensorboard", config: dict | None = None):
        self.run_dir, self.active = run_dir, active
        self.tracker = make_tracker(logger, run_dir, config or {}) if active else None

    def training(self, step: int, terms: dict[str, float], num_dims: int, extras: dict[str, float]) -> None:
        """The loss parts (nats), bits/dim, and ``extras`` (gradient norm, learning rate, counters,
        images/s, the model's scales) of the latest step."""
        if not self.active:
            return
        for k, v in terms.items():
            self.tracker.scalar(f"train/{k}", v, step)
        self.tracker.scalar("train/bits_per_dim", bits_per_dim(terms["loss"], num_dims), step)
        for k, v in extras.items():
            self.tracker.scalar(k, v, step)

    def samples(self, step: int, images_by_temperature: dict[float, torch.Tensor]) -> None:
        """``samples_T{t}.png`` grids, 8 a row, and the same grids in TensorBoard."""
        if not self.active:
            return
        for t, images in images_by_temperature.items():
            save_image(images, self.run_dir / f"samples_T{t:g}.png", nrow=8)
            self.tracker.image(f"samples/T={t:g}", make_grid(images, nrow=8), step)

    def evaluation(self, record: dict) -> None:
        """One line of ``metrics.jsonl`` (step, training time, test bits/dim, the sample score) and
        its numbers in TensorBoard."""
        if not self.active:
            return
        self.tracker.scalar("test/bits_per_dim", record["test_bpd"], record["step"])
        for key in SCORE_KEYS + CLASS_SCORE_KEYS:
            if key in record:
                self.tracker.scalar(f"test/{key}", record[key], record["step"])
        append_record(self.run_dir / "metrics.jsonl", record)

    def last_evaluation(self) -> dict | None:
        records = read_records(self.run_dir / "metrics.jsonl")
        return records[-1] if records else None

    def summary(self, summary: dict) -> None:
        if self.active:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
