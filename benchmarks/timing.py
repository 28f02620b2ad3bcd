"""Timing helpers shared by the benchmark scripts."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable

import torch


def train_step(loss_fn: Callable[[], torch.Tensor], parameters: Iterable[torch.nn.Parameter],
               lr: float) -> Callable[[], None]:
    """One training step as a function: ``loss_fn()``, backward, a fused Adam update."""
    optimizer = torch.optim.Adam(parameters, lr=lr, fused=True)

    def step() -> None:
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def seconds(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of each of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls of ``fn``, after one untimed warm-up call."""
    fn()
    return min(seconds(fn, repeats))


def alternating_medians(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn, once each per round,
    so that all see the same machine load."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += seconds(fn, 1)
    return {name: statistics.median(t) for name, t in times.items()}
