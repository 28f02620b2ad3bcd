"""The values the command line accepts, checked when it is parsed: each function here is an
``argparse`` ``type`` that returns the value or raises ``ArgumentTypeError`` with one line, so
that a bad flag ends in ``fvae CMD: error: argument --FLAG: ...`` and exit 2 before any work.

Integers are written as integers (``1e12`` is not one); numbers must be finite. Flags that set
a config field (``fvae train --lr``) are checked against that field's rule in
:mod:`fvae.config`, the one source of their limits.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from typing import Callable

import torch

from fvae.config import ConfigError, TrainConfig


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not an integer") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a finite number")
    return value


def integer(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``[low, high]``."""
    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; expected an integer from {low} to {high}")
        return value
    parse.__name__ = "integer"
    return parse


def number(above: float, high: float) -> Callable[[str], float]:
    """A finite number in ``(above, high]``."""
    def parse(text: str) -> float:
        value = _number(text)
        if not above < value <= high:
            raise argparse.ArgumentTypeError(f"{value:g} is out of range; expected a number > {above:g} "
                                             f"and <= {high:g}")
        return value
    parse.__name__ = "number"
    return parse


def numbers(low: float, high: float, most: int = 64) -> Callable[[str], list[float]]:
    """Comma-separated finite numbers in ``[low, high]``, at most ``most`` of them: ``-1,0,1,2``."""
    def parse(text: str) -> list[float]:
        values = [_number(item) for item in text.split(",")]
        if not 1 <= len(values) <= most:
            raise argparse.ArgumentTypeError(f"expected 1 to {most} comma-separated numbers, got {len(values)}")
        for value in values:
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(f"{value:g} is out of range; expected numbers from {low:g} "
                                                 f"to {high:g}")
        return values
    parse.__name__ = "numbers"
    return parse


def score_samples(text: str) -> int:
    """0 (no sample score) or 2 to 2^20 samples."""
    value = integer(0, 1 << 20)(text)
    if value == 1:
        raise argparse.ArgumentTypeError("1 is not allowed; expected 0 (no score) or at least 2 samples")
    return value


def duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"5m"``, ``"1.5h"`` -> seconds, within ``train.max_time``'s range."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r:.40} (use e.g. 300, 300s, 5m, 1.5h)")
    return train_field("max_time")(str(float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]))


def train_field(name: str) -> Callable[[str], object]:
    """A value of ``train.NAME``, checked by that field's rule (its type, range and choices)."""
    rule = next(f.metadata["rule"] for f in dataclasses.fields(TrainConfig) if f.name == name)

    def parse(text: str):
        raw = _integer(text) if rule.type is int else _number(text) if rule.type is float else text
        try:
            return rule.check(f"train.{name}", raw)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    parse.__name__ = name
    return parse


def device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, where this machine has it."""
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a device; expected cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        index = int(text.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text} is not available on this machine "
                                             f"({torch.cuda.device_count()} CUDA device(s))")
    return text
