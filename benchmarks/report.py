"""What every benchmark script shares: its argument parser's common options, the command line
that produced a result, Markdown tables, and writing ``results/NAME.{md,json}``."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from fvae.commands.reporting import markdown_table

__all__ = ["RESULTS", "command_line", "cpu_name", "environment", "markdown_table", "parser", "write_report"]

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


def write_report(out: Path, name: str, markdown: str, record: dict[str, Any]) -> None:
    """Print ``markdown`` and write it to ``out/NAME.md``, and ``record`` (with :func:`environment`
    under ``meta`` unless given) to ``out/NAME.json``."""
    print(markdown, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown.rstrip() + "\n")
    (out / f"{name}.json").write_text(json.dumps({"meta": environment(), **record}, indent=2))
