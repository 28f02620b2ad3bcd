"""What a training run counts besides the model: the steps it skipped, on the device (read back
only when a step is logged or checkpointed), and its training time, on the host (pauses for
evaluation, samples and checkpoints left out)."""
from __future__ import annotations

import contextlib
import time

import torch


class SkippedSteps:
    """Steps whose loss or gradient was not finite, counted on the device (read only when a step is
    logged or checkpointed): ``total``, the current ``run`` of them in a row, and the ``longest``
    run since :meth:`longest_run` was last read."""

    def __init__(self, device: torch.device, total: int = 0):
        self.total = torch.tensor(total, device=device)
        self.run = torch.zeros((), dtype=torch.long, device=device)
        self.longest = torch.zeros((), dtype=torch.long, device=device)

    def record(self, ok: torch.Tensor) -> None:
        """Count one step, ``ok`` a 0-d bool tensor: true where it updated the model."""
        bad = (~ok).long()
        self.total.add_(bad)
        self.run.add_(1).mul_(bad)
        torch.maximum(self.longest, self.run, out=self.longest)

    def longest_run(self) -> int:
        """The longest run of skipped steps since the last call (a host read-back)."""
        longest = int(self.longest)
        self.longest.copy_(self.run)
        return longest


class TrainingClock:
    """Training time: wall-clock seconds less the pauses (evaluation, sampling, checkpoints);
    ``elapsed`` carries over a resume. ``images_per_second`` covers the steps since it was last read."""

    def __init__(self, elapsed: float = 0.0):
        self.start = self.window = time.perf_counter() - elapsed

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - began
            self.window += time.perf_counter() - began

    def images_per_second(self, images: int) -> float:
        now = time.perf_counter()
        rate, self.window = images / (now - self.window), now
        return rate
