"""What every benchmark script shares: its argument parser's common options, the command line
that produced a result, Markdown tables, and writing ``results/NAME.{md,json}``."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

RESULTS = Path(__file__).with_name("results")


def parser(doc: str, threads: int | None = 2) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--out`` (the results folder)
    and, unless ``threads`` is None, ``--threads`` (torch's CPU threads, default ``threads``)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    if threads is not None:
        p.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    return p


def command_line() -> str:
    """The command that is running, as a reader would type it: ``python benchmarks/x.py ARGS``."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args: argparse.Namespace | None = None) -> dict[str, Any]:
    """The command, versions and machine, for the JSON record of a result."""
    env = {"command": command_line(), "torch": torch.__version__, "python": platform.python_version(),
           "cpu": cpu_name(), "cores": os.cpu_count()}
    if args is not None and hasattr(args, "threads"):
        env["threads"] = args.threads
    return env


def cell(value: Any, fmt: str | Callable[[Any], str] | None = None) -> str:
    if value is None:
        return ""
    if callable(fmt):
        return fmt(value)
    if fmt:
        return format(value, fmt)
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str], formats: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts) with one column per key in ``columns``; ``formats``
    maps a key to a format spec or a function, ``headers`` a key to its column title; numbers
    are right-aligned."""
    formats, headers = formats or {}, headers or {}
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in columns]
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
             "|" + "".join("---:|" if n else "---|" for n in numeric)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(c), formats.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_report(out: Path, name: str, markdown: str, record: dict[str, Any]) -> None:
    """Print ``markdown`` and write it to ``out/NAME.md``, and ``record`` (with :func:`environment`
    under ``meta`` unless given) to ``out/NAME.json``."""
    print(markdown, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown.rstrip() + "\n")
    (out / f"{name}.json").write_text(json.dumps({"meta": environment(), **record}, indent=2))
