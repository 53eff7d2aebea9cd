"""The benchmark report as a chart: every measurement that has a target, as a multiple of that target.

A bar of 1.0 or more meets its target (for "lower is better" rows the multiple is target / result, so longer
is better everywhere). The axis is logarithmic, since the multiples range from a fraction to several times.
Reference rows (no target) are left to the table. Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from _common import Measurement

PASS_COLOR = "#2e7d32"
MISS_COLOR = "#c62828"


def target_multiple(row: Measurement) -> float:
    """How many times its target a row reaches (> 1 is better than the target, whatever the direction)."""
    assert row.target is not None
    if row.higher_is_better:
        return row.score / row.target
    return row.target / row.score if row.score > 0 else float("inf")


def require_matplotlib() -> None:
    """Exit with a clear message when matplotlib is missing (call it before a long run, not after)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("the chart needs matplotlib: pip install -e '.[bench]' (or pass --no-chart)") from None


def draw_chart(rows: Sequence[Measurement], path: Path, subtitle: str) -> int:
    """Write the chart of ``rows`` (those with a target) to ``path`` as PNG; returns how many bars it drew."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    targeted = [row for row in rows if row.target is not None]
    if not targeted:
        return 0
    multiples = [target_multiple(row) for row in targeted]
    figure, axes = plt.subplots(figsize=(12, 1.6 + 0.42 * len(targeted)), layout="constrained")
    positions = list(range(len(targeted)))
    colors = [PASS_COLOR if row.passed else MISS_COLOR for row in targeted]
    axes.barh(positions, multiples, color=colors, height=0.6)
    axes.set_xscale("log")
    ticks = [0.125, 0.25, 0.5, 1, 2, 4, 8]
    axes.set_xticks(ticks, [f"{tick:g}x" for tick in ticks])
    axes.minorticks_off()
    axes.set_xlim(min(0.1, min(multiples) / 1.5), max(16.0, max(multiples) * 10))  # room for the labels
    axes.axvline(1.0, color="black", linewidth=1, linestyle="--")
    axes.set_yticks(positions, [_short(row.name) for row in targeted], fontsize=8)
    axes.invert_yaxis()  # first row at the top, as in the table
    for position, row, multiple in zip(positions, targeted, multiples, strict=True):
        label = f"{multiple:.2f}x: {row.result} (target {row.target_text})"
        axes.text(multiple * 1.06, position, label, va="center", fontsize=7)
    axes.set_xlabel(
        "multiple of the target: result / target, or target / result where lower is better (log scale; ≥ 1x meets it)"
    )
    title = "iii-py benchmarks against their targets (green PASS, red MISS; reference rows only in the table)"
    axes.set_title(title + "\n" + subtitle.replace("; ", ", "), fontsize=9, wrap=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return len(targeted)


def _short(name: str, limit: int = 70) -> str:
    """A row name that fits beside the chart."""
    return name if len(name) <= limit else name[: limit - 1] + "…"
