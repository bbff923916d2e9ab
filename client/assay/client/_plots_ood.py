"""Figures of the HTML OOD evaluation report: ROC curves and score histograms (needs matplotlib).

Imported lazily by `assay.client.ood_report_html` through `assay.client._html.plots`;
the page chooses what to draw (which scorers, how many), this module only draws it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import zip_longest
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from assay.client._plots import MODEL, WORST, percent, png, text

if TYPE_CHECKING:
    from assay.client.ood_report_html import RocLine, ScorePanel


def _label(scorer: str, auroc: float | None, recommended: Any) -> str:
    """The scorer with its AUROC (and whether it is the recommended one), for matplotlib."""
    mark = ", recommended" if scorer == recommended else ""
    return text(f"{scorer} (AUROC {percent(auroc)}{mark})")


def roc(lines: Sequence[RocLine], recommended: Any, tpr: float) -> str:
    """ROC curves (OOD positive), the recommended scorer bold, chance dotted; a PNG."""
    fig = Figure(figsize=(6.5, 5.8), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="0.45", linewidth=1, label="chance")
    ax.axvline(
        1 - tpr, color="k", linestyle="--", linewidth=0.8, label=f"{tpr:.0%} in-distribution kept"
    )
    for line in lines:
        best = line.scorer == recommended
        ax.plot(
            line.fpr,
            line.tpr,
            color=line.color,
            linewidth=2.6 if best else 1.3,
            zorder=3 if best else 2,
            label=_label(line.scorer, line.auroc, recommended),
        )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="in-distribution images flagged as OOD (FPR)",
        ylabel="OOD images detected (TPR)",
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return png(fig)


def histograms(panels: Sequence[ScorePanel], recommended: Any) -> str:
    """Score densities, in-distribution vs OOD, a panel per scorer (own axis); a PNG."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.7 * cols + 0.6, 2.7 * rows + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, panel in zip_longest(axes.flat, panels):
        if panel is None:
            ax.set_visible(False)
            continue
        for density, color in ((panel.inside, MODEL), (panel.outside, WORST)):
            if density is not None:
                ax.stairs(density, panel.edges, fill=True, color=color, alpha=0.35, linewidth=0)
                ax.stairs(density, panel.edges, color=color, linewidth=1.2)
        title = _label(panel.scorer, panel.auroc, recommended)
        best = panel.scorer == recommended
        ax.set_title(title, fontsize=9, fontweight="bold" if best else "normal")
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles = [
        Patch(color=MODEL, alpha=0.6, label="in-distribution"),
        Patch(color=WORST, alpha=0.6, label="OOD"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=2, fontsize=9)
    fig.supxlabel("score (higher = more OOD)", fontsize=9)
    fig.supylabel("density", fontsize=9)
    return png(fig)
