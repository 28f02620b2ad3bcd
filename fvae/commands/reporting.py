"""Tables and curve plots, shared by ``fvae compare`` and the benchmark scripts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence


def cell(value: Any, fmt: str | Callable[[Any], str] | None = None) -> str:
    """One table cell: empty for None, else ``value`` through ``fmt`` (a format spec or a function)."""
    if value is None:
        return ""
    if callable(fmt):
        return fmt(value)
    return format(value, fmt) if fmt else str(value)


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


def plot_curves(curves: dict[str, list[dict]], metrics: Sequence[tuple[str, str, str]],
                x_keys: Sequence[tuple[str, str]], path: str | Path, dpi: int = 100) -> None:
    """A grid of line plots, a row per metric ``(key, label, "log" or "linear")`` and a column per
    x-axis ``(key, label)``, a line per curve: ``curves`` maps a label to its points (dicts
    holding the keys; points without a metric are left out of its plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(metrics), len(x_keys), figsize=(5.5 * len(x_keys), 4 * len(metrics)), squeeze=False)
    for label, points in curves.items():
        for row, (metric, _, _) in enumerate(metrics):
            kept = [p for p in points if p.get(metric) is not None]
            for col, (x, _) in enumerate(x_keys):
                if kept:
                    axes[row, col].plot([p[x] for p in kept], [p[metric] for p in kept], marker="o", label=label)
    for row, (_, name, scale) in enumerate(metrics):
        for col, (_, x_name) in enumerate(x_keys):
            ax = axes[row, col]
            ax.set(xlabel=x_name, ylabel=name)
            ax.set_yscale(scale)
            ax.grid(alpha=0.3, which="both")
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
