"""Figures of the HTML AI-generated-image detector report (needs matplotlib).

Imported lazily by `assay.client.aigen_report_html` through `assay.client._html.plots`:
bars per generator, ROC and precision-recall curves, the score histogram,
robustness to re-encoding and the mean power spectra.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from assay.client import _aigen_view as view
from assay.client._html import finite_or_none, floats, mapping, value
from assay.client._plots import (
    BASELINE,
    MODEL,
    band,
    est_floats,
    ests,
    names_axis,
    percent,
    png,
    text,
)

MAX_CURVES = 10
"""Generators drawn in one curve, histogram or spectrum figure at most (one colour each)."""
_REAL, _OVERALL = "0.35", "k"


def _generator_bars(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """AP and detection rate per generator, with CI error bars and the overall AP as a band."""
    gens = view.generators(report)
    if not gens:
        return None
    fig = Figure(figsize=(min(14.0, max(6.5, 0.7 * len(gens) + 4)), 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(gens))
    for offset, key, color, label in (
        (-0.2, "ap", MODEL, "AP (vs all real images)"),
        (0.2, "accuracy_calibrated", BASELINE, f"detected at {view.at(report)}"),
    ):
        values, err = ests([g.get(key) for g in gens])
        bars = ax.bar(x + offset, values, 0.4, yerr=err, capsize=3, color=color, label=label)
        labels = [f"{v:.0f}" if math.isfinite(v) else "n/a" for v in values]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    band(ax, mapping(report.get("overall")).get("ap"), "k", "overall AP")
    names_axis(ax, [str(g.get("name", "?")) for g in gens])
    title = f"AP and detection rate per generator ({view.confidence(report)} CI)"
    ax.set(ylim=(0, 112), ylabel="%", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    caption = (
        "Per generator: AP of all real images against its images, and the share of its "
        "images flagged at the threshold. Low bars mark generators the detector misses."
    )
    return caption, fig


def _xy(curve: Any, x_key: str, y_key: str) -> tuple[list[float], list[float]] | None:
    x, y = floats(mapping(curve).get(x_key)), floats(mapping(curve).get(y_key))
    return (x, y) if x and len(x) == len(y) else None


def _curves(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """ROC and PR curves: all generators (black, bold), then each generator."""
    curves = mapping(report.get("curves"))
    by_gen, colors = mapping(curves.get("by_generator")), view.colors(report)
    metrics = {str(g.get("name")): g for g in view.generators(report)}
    lines = [("all generators", curves, mapping(report.get("overall")), _OVERALL)]
    lines += [
        (str(n), mapping(by_gen[n]), mapping(metrics.get(str(n))), colors.get(str(n), "C9"))
        for n in list(by_gen)[:MAX_CURVES]
    ]
    if not any(
        _xy(c.get("roc"), "fpr", "tpr") or _xy(c.get("pr"), "recall", "precision")
        for _, c, _, _ in lines
    ):
        return None
    fig = Figure(figsize=(11.0, 4.8), layout="constrained")
    roc_ax, pr_ax = fig.subplots(1, 2)
    for label, curve, metric, color in lines:
        width = 2.4 if color == _OVERALL else 1.3
        if roc := _xy(curve.get("roc"), "fpr", "tpr"):
            name = f"{label} (AUROC {percent(value(metric.get('auroc')))})"
            roc_ax.plot(*roc, color=color, linewidth=width, label=text(name))
        if pr := _xy(curve.get("pr"), "recall", "precision"):
            name = f"{label} (AP {percent(value(metric.get('ap')))})"
            pr_ax.plot(*pr, color=color, linewidth=width, label=text(name))
    if roc_ax.lines:
        roc_ax.plot([0, 1], [0, 1], ":", color="0.45", linewidth=1, label="chance")
    roc_ax.set(xlabel="real images flagged (FPR)", ylabel="generated images flagged (TPR)")
    pr_ax.set(xlabel="recall (generated images flagged)", ylabel="precision")
    _finish(roc_ax, "ROC", "lower right")
    _finish(pr_ax, "Precision-recall", "lower left")
    caption = "Generated images are the positive class; legend: AUROC and AP of each curve."
    return caption, fig


def _finish(ax: Axes, title: str, loc: Literal["lower right", "lower left"]) -> None:
    """Limits, title, grid, and a legend only where something is labelled (else a note)."""
    ax.set(xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc=loc)
    if not ax.lines:
        ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes)


def _shares(edges: Sequence[float], counts: Any) -> list[float] | None:
    """Histogram counts as percent of the group's images, None where unusable."""
    values = floats(counts)
    if not values or len(edges) != len(values) + 1 or sum(values) <= 0:
        return None
    return [100 * v / sum(values) for v in values]


def _histogram(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """P(generated) per group as percent of its images, with the decision threshold."""
    hist = mapping(report.get("histogram"))
    edges = floats(hist.get("edges"))
    if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)):
        return None
    colors = view.colors(report)
    groups = [("real", hist.get("real"), _REAL)] + [
        (str(n), c, colors.get(str(n), "C9"))
        for n, c in list(mapping(hist.get("generated")).items())[:MAX_CURVES]
    ]
    shown = [(n, s, c) for n, counts, c in groups if (s := _shares(edges, counts)) is not None]
    if not shown:
        return None
    fig = Figure(figsize=(9.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, share, color in shown:
        if color == _REAL:
            ax.stairs(share, edges, fill=True, color=color, alpha=0.3, linewidth=0)
        ax.stairs(
            share, edges, color=color, linewidth=2.0 if color == _REAL else 1.3, label=text(name)
        )
    threshold = view.threshold(report)
    if threshold is not None and not view.uncalibrated(report) and threshold != 0.5:
        ax.axvline(threshold, color="C3", linewidth=1.5, label=f"threshold {threshold:.3g}")
    ax.axvline(0.5, color="k", linestyle="--", linewidth=1, label="0.5 rule")
    ax.set(xlabel="P(generated)", ylabel="share of the group's images (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlim(edges[0], edges[-1])
    ax.grid(alpha=0.3)
    caption = "Detector scores per group, each as a share of its own images; an image is "
    caption += "flagged when its score is at or above the threshold."
    return caption, fig


def _robustness_figure(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """AP and accuracy at the threshold vs JPEG quality and down-scaling, with CI bands."""
    kinds = [(w, pts) for k, w, c in view.TRANSFORMS if (pts := view.robustness(report, k, c))]
    if not kinds:
        return None
    band = f"{view.confidence(report)} CI"
    fig = Figure(figsize=(10.0, 3.4 * len(kinds) + 0.4), layout="constrained")
    axes = fig.subplots(len(kinds), 2, squeeze=False)
    for row, (what, points) in zip(axes, kinds, strict=True):
        x = list(range(len(points)))
        for ax, key, name in zip(
            row,
            ("ap", "accuracy_calibrated"),
            ("AP", f"accuracy at {view.at(report)}"),
            strict=True,
        ):
            triples = [est_floats(mapping(e).get(key)) for _, e in points]
            value, low, high = ([100 * t[i] for t in triples] for i in range(3))
            ax.fill_between(x, low, high, color=MODEL, alpha=0.2, linewidth=0, label=band)
            ax.plot(x, value, "o-", color=MODEL, label=name)
            if key == "accuracy_calibrated":
                ax.axhline(50, color="0.45", linestyle=":", linewidth=1, label="chance")
            ax.set_xticks(x, [label for label, _ in points])
            ax.set(xlabel=what, ylabel=f"{name} (%)", ylim=(0, 105), title=f"{name} vs {what}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower left")
    caption = "Metrics after re-saving every image as JPEG and after down-scaling, the clean "
    caption += f"images first; bands: {view.confidence(report)} bootstrap intervals."
    return caption, fig


def _spectra(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """Mean log power spectrum per group and, beside it, each group minus the real images."""
    spectra = mapping(report.get("spectra"))
    freq, colors = floats(spectra.get("frequency")), view.colors(report)
    groups = {
        str(n): v
        for n, raw in mapping(spectra.get("by_group")).items()
        if freq and len(v := floats(raw)) == len(freq)
    }
    if not groups:
        return None
    real = groups.pop("real", None)
    cols = 2 if real is not None and groups else 1
    fig = Figure(figsize=(5.5 * cols + 1.0, 4.2), layout="constrained")
    axes = fig.subplots(1, cols, squeeze=False)[0]
    if real is not None:
        axes[0].plot(freq, real, color=_OVERALL, linewidth=2.2, label="real")
    for name, values in list(groups.items())[:MAX_CURVES]:
        color = colors.get(name, "C9")
        axes[0].plot(freq, values, color=color, linewidth=1.3, label=text(name))
        if cols == 2 and real is not None:
            diff = [v - r for v, r in zip(values, real, strict=True)]
            axes[1].plot(freq, diff, color=color, linewidth=1.3, label=text(name))
    axes[0].set(ylabel="mean log10 power", title="Mean power spectrum")
    if cols == 2:
        axes[1].axhline(0, color=_OVERALL, linewidth=1)
        axes[1].set(ylabel="log10 power minus real", title="Difference to real images")
    for ax in axes:
        ax.set(xlabel="frequency (cycles/pixel)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    crop = finite_or_none(spectra.get("crop"))
    caption = "Azimuthally averaged log power spectrum of each image's noise residual"
    caption += f" ({crop:.0f} px tiles)" if crop is not None else ""
    caption += ", averaged per group; generators' up-sampling often leaves excess power at "
    caption += "high frequencies."
    return caption, fig


FIGURES: dict[str, Callable[[Mapping[str, Any]], tuple[str, Figure] | None]] = {
    "generators": _generator_bars,
    "curves": _curves,
    "histogram": _histogram,
    "robustness": _robustness_figure,
    "spectra": _spectra,
}


def render_all(report: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """(caption, base64 PNG) per figure the report has data for, keyed by its section."""
    out = {}
    for key, build in FIGURES.items():
        built = build(report)
        if built is not None:
            out[key] = (built[0], png(built[1]))
    return out
