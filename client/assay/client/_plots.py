"""What every report's figures share: colours, report numbers, axes helpers, PNG encoding.

Imported only by the ``_plots_<capability>`` modules, which `assay.client._html.plots`
imports lazily (it needs matplotlib). Each figure is a standalone
`matplotlib.figure.Figure` drawn by the Agg canvas: pyplot is never imported,
so rendering neither switches the process's backend (which would close a
notebook's open figures) nor registers figures that could leak.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
MODEL, BASELINE, WORST = "C0", "C1", "C3"


def as_float(x: Any) -> float:
    """A report number as a float, NaN where null or not a number."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def est_floats(e: Any) -> tuple[float, float, float]:
    """(value, low, high) of an estimate E, NaN where null; a bare number has no bounds."""
    if isinstance(e, Mapping):
        return as_float(e.get("value")), as_float(e.get("low")), as_float(e.get("high"))
    return as_float(e), math.nan, math.nan


def text(value: Any) -> str:
    """A report string safe for matplotlib text (a `$` would start mathtext)."""
    return str(value).replace("$", r"\$")


def percent(x: Any) -> str:
    """A rate as "12.3%", "n/a" where null."""
    return f"{as_float(x):.1%}" if math.isfinite(as_float(x)) else "n/a"


def percents(values: Sequence[float]) -> list[float]:
    """Rates as percentages."""
    return [100.0 * v for v in values]


def ests(items: Sequence[Any]) -> tuple[list[float], list[list[float]]]:
    """Percent values and their asymmetric error bars (never negative; 0 without a bound)."""
    triples = [est_floats(e) for e in items]
    below = [max(v - lo, 0.0) if math.isfinite(v - lo) else 0.0 for v, lo, _ in triples]
    above = [max(hi - v, 0.0) if math.isfinite(hi - v) else 0.0 for v, _, hi in triples]
    return percents([v for v, _, _ in triples]), [percents(below), percents(above)]


def names_axis(ax: Axes, names: Sequence[str]) -> None:
    """Category names on the x axis, rotated the more there are."""
    ax.set_xticks(
        range(len(names)),
        [text(n) for n in names],
        rotation=90 if len(names) > 15 else 35 if len(names) > 3 else 0,
        ha="right" if len(names) > 3 else "center",
    )


def band(ax: Axes, estimate: Any, color: str, label: str) -> None:
    """A horizontal line at an estimate and a shaded band over its CI."""
    value, low, high = est_floats(estimate)
    if math.isfinite(value):
        ax.axhline(
            100 * value, color=color, linestyle="--", linewidth=1, label=f"{label} {value:.1%}"
        )
    if math.isfinite(low) and math.isfinite(high):
        ax.axhspan(100 * low, 100 * high, color=color, alpha=0.12, linewidth=0)


def png(fig: Figure) -> str:
    """The figure as a base64 PNG (rendered by Agg) and the figure emptied."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    fig.clear()
    return base64.b64encode(buffer.getvalue()).decode("ascii")
