"""Figures of the HTML robustness report, as base64 PNGs (needs matplotlib).

Imported lazily by `assay.client.report_html` through `assay.client._html.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import zip_longest
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from assay.client._plots import (
    BASELINE,
    MODEL,
    WORST,
    as_float,
    band,
    est_floats,
    ests,
    names_axis,
    percent,
    percents,
    png,
    text,
)

MAX_GROUPS = 40
"""Subgroup bars shown at most (the lowest accuracies)."""


def severity_grid(corruptions: Mapping[str, Any]) -> Figure | None:
    """Error vs severity per corruption: model line with CI band, baseline dashed."""
    if not corruptions:
        return None
    cols = min(5, len(corruptions))
    rows = math.ceil(len(corruptions) / cols)
    fig = Figure(figsize=(2.6 * cols + 0.5, 2.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False)
    for ax, name in zip_longest(axes.flat, corruptions):
        if name is None:
            ax.set_visible(False)
            continue
        entry = corruptions[name] or {}
        errors = entry.get("errors") or {}
        x = sorted(int(s) for s in errors)
        triples = [est_floats(errors[str(s)]) for s in x]
        value, low, high = ([100 * t[i] for t in triples] for i in range(3))
        ax.fill_between(x, low, high, color=MODEL, alpha=0.2, linewidth=0, label="95 % CI")
        ax.plot(x, value, "o-", color=MODEL, label="model")
        base = entry.get("baseline_errors") or {}
        if base:
            bx = sorted(int(s) for s in base)
            ax.plot(
                bx,
                [100 * as_float(base[str(s)]) for s in bx],
                "s--",
                color=BASELINE,
                label="baseline",
            )
        ax.set_title(text(name) + (" (extra)" if entry.get("extra") else ""), fontsize=9)
        ax.set_xticks(x or [1])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.supxlabel("severity", fontsize=9)
    fig.supylabel("top-1 error (%)", fontsize=9)
    return fig


def corruption_bars(report: Mapping[str, Any]) -> Figure | None:
    """CE and relative CE per corruption (mCE with its CI as a band), else mean errors."""
    corruptions = report.get("corruptions") or {}
    if not corruptions:
        return None
    names = list(corruptions)
    entries = [corruptions[n] or {} for n in names]
    fig = Figure(figsize=(max(6.0, 0.6 * len(names) + 2), 4.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    ce = [as_float(e.get("ce")) for e in entries]
    if any(math.isfinite(c) for c in ce):
        ax.bar(x - 0.2, percents(ce), 0.4, color=MODEL, label="CE")
        ax.bar(
            x + 0.2,
            percents([as_float(e.get("relative_ce")) for e in entries]),
            0.4,
            color=BASELINE,
            label="relative CE",
        )
        ax.axhline(100, color="k", linestyle=":", linewidth=1, label="baseline (100 %)")
        band(ax, report.get("mce"), MODEL, "mCE")
        ax.set_ylabel("% of baseline error")
        ax.set_title(f"Corruption error vs {text(report.get('mce_baseline') or 'baseline')}")
    else:
        values, err = ests([e.get("mean_error") for e in entries])
        ax.bar(x, values, 0.6, yerr=err, capsize=3, color=MODEL, label="mean error (95 % CI)")
        band(ax, (report.get("clean") or {}).get("error"), "k", "clean error")
        ax.set_ylabel("top-1 error (%)")
        ax.set_title("Mean error per corruption (no baseline: no CE)")
    names_axis(ax, names)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def reliability(calibration: Mapping[str, Any] | None) -> Figure | None:
    """Reliability diagram: accuracy per confidence bin, the diagonal, and bin counts."""
    bins = [b for b in (calibration or {}).get("reliability") or [] if isinstance(b, Mapping)]
    if not calibration or not bins:
        return None
    lower = [as_float(b.get("lower")) for b in bins]
    width = [as_float(b.get("upper")) - lo for b, lo in zip(bins, lower, strict=True)]
    accuracy = [as_float(b.get("accuracy")) for b in bins]
    confidence = [as_float(b.get("mean_confidence")) for b in bins]
    counts = [int(c) if math.isfinite(c) else 0 for c in (as_float(b.get("count")) for b in bins)]
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(lower, accuracy, width, align="edge", color=MODEL, edgecolor="white", label="accuracy")
    gap = [c - a for a, c in zip(accuracy, confidence, strict=True)]
    top.bar(
        lower,
        gap,
        width,
        bottom=accuracy,
        align="edge",
        fill=False,
        edgecolor=WORST,
        hatch="//",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    top.legend(fontsize=8, loc="upper left")
    bars = bottom.bar(lower, counts, width, align="edge", color="0.55")
    bottom.bar_label(bars, labels=[str(c) if c else "" for c in counts], fontsize=7)
    bottom.set(xlabel="confidence", ylabel="images", ylim=(0, max([*counts, 1]) * 1.3))
    _, low, high = est_floats(calibration.get("ece"))
    title = f"ECE {percent(est_floats(calibration.get('ece'))[0])}"
    title += f" [{low:.1%}, {high:.1%}]" if math.isfinite(low + high) else ""
    temperature = as_float(calibration.get("temperature"))
    if math.isfinite(temperature):
        after = percent(calibration.get("ece_after_temperature"))
        title += f"\ntemperature {temperature:.3g} (ECE after scaling {after})"
    top.set_title(title, fontsize=10)
    return fig


def flip_rates(perturbations: Mapping[str, Any], mean: Any) -> Figure | None:
    """Flip rate per perturbation with CIs; noise sequences compare to the first frame."""
    if not perturbations:
        return None
    names = list(perturbations)
    entries = [perturbations[n] or {} for n in names]
    values, err = ests([e.get("flip_rate") for e in entries])
    fig = Figure(figsize=(max(5.0, 0.7 * len(names) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    colors = [BASELINE if e.get("compare_to_first") else MODEL for e in entries]
    ax.bar(range(len(names)), values, 0.6, yerr=err, capsize=3, color=colors)
    band(ax, mean, "k", "mean flip rate")
    names_axis(ax, names)
    ax.set(ylabel="flip rate (%)", title="Flip rate per perturbation (95 % CI)")
    kinds = [
        Patch(color=MODEL, label="consecutive frames"),
        Patch(color=BASELINE, label="each frame vs the first"),
    ]
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *kinds], fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def attacks(items: Sequence[Any]) -> Figure | None:
    """Robust accuracy (with CI; clean dotted) and success rate vs epsilon, per attack."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for a in items:
        if isinstance(a, Mapping):
            groups.setdefault(f"{a.get('kind')} ({a.get('norm')})", []).append(a)
    if not groups:
        return None
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    acc_ax, rate_ax = fig.subplots(1, 2, sharex=True)
    for i, (label, group) in enumerate(groups.items()):
        group.sort(key=lambda a: as_float(a.get("epsilon")))
        eps = [as_float(a.get("epsilon")) for a in group]
        values, err = ests([a.get("robust_accuracy") for a in group])
        color = f"C{i % 10}"
        acc_ax.errorbar(eps, values, yerr=err, fmt="o-", capsize=3, color=color, label=text(label))
        acc_ax.plot(
            eps, percents([as_float(a.get("clean_accuracy")) for a in group]), "x:", color=color
        )
        rate_ax.plot(
            eps,
            percents([as_float(a.get("success_rate")) for a in group]),
            "o-",
            color=color,
            label=text(label),
        )
    acc_ax.set(title="Robust accuracy (solid, 95 % CI) vs clean (dotted)", ylabel="accuracy (%)")
    rate_ax.set(title="Attack success rate", ylabel="success rate (%)")
    epsilons = [e for a in items if isinstance(a, Mapping) if (e := as_float(a.get("epsilon"))) > 0]
    wide = bool(epsilons) and max(epsilons) > 10 * min(epsilons)
    for ax in (acc_ax, rate_ax):
        ax.set(
            xlabel="epsilon (pixel scale 0-1)", ylim=(0, 105), xscale="log" if wide else "linear"
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def subgroups(groups: Mapping[str, Any] | None, clean_error: Any) -> Figure | None:
    """Accuracy per subgroup (lowest first; n = images), the worst highlighted with its CI."""
    accuracy = (groups or {}).get("accuracy") or {}
    if not groups or not accuracy:
        return None
    names = sorted(
        accuracy, key=lambda g: (not math.isfinite(as_float(accuracy[g])), as_float(accuracy[g]))
    )
    shown = names[:MAX_GROUPS]
    counts = groups.get("counts") or {}
    worst = groups.get("worst_group")
    fig = Figure(figsize=(min(14.0, max(5.0, 0.5 * len(shown) + 2)), 4.5), layout="constrained")
    ax = fig.subplots()
    colors = [WORST if g == worst else MODEL for g in shown]
    ax.bar(range(len(shown)), [100 * as_float(accuracy[g]) for g in shown], 0.6, color=colors)
    if worst in shown:
        _, err = ests([groups.get("worst_accuracy")])
        value = 100 * est_floats(groups.get("worst_accuracy"))[0]
        ax.errorbar(
            [shown.index(worst)],
            [value],
            yerr=err,
            fmt="none",
            ecolor="k",
            capsize=4,
            label="worst group, 95 % CI",
        )
    band(ax, 1 - as_float(est_floats(clean_error)[0]), "k", "overall accuracy")
    names_axis(ax, [f"{g}\n(n={counts.get(g, '?')})" for g in shown])
    ax.set(ylim=(0, 105), ylabel="accuracy (%)")
    more = f", {len(names) - len(shown)} more not shown" if len(names) > len(shown) else ""
    ax.set_title(f"Accuracy per subgroup (spread {percent(groups.get('spread'))}{more})")
    ax.legend(fontsize=8, loc="lower right")
    return fig


CAPTIONS = {
    "Error vs severity": "Top-1 error per severity with its 95 % bootstrap band; dashed: the "
    "baseline's errors.",
    "Corruption errors": "CE and relative CE per corruption (100 % = as bad as the baseline; "
    "band: mCE CI), or mean error with 95 % CIs when there is no baseline.",
    "Reliability diagram": "Accuracy per confidence bin against the diagonal of perfect "
    "calibration; below, images per bin.",
    "Flip rates": "How often the prediction changes along each perturbation sequence (95 % CIs).",
    "Adversarial attacks": "Robust accuracy and attack success rate against the budget epsilon.",
    "Subgroups": "Clean accuracy per group (n = images); red: the worst group.",
}


def render_all(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(heading, caption, base64 PNG) of each figure the report has data for, in order."""
    clean = report.get("clean") or {}
    builders: dict[str, Callable[[], Figure | None]] = {
        "Error vs severity": lambda: severity_grid(report.get("corruptions") or {}),
        "Corruption errors": lambda: corruption_bars(report),
        "Reliability diagram": lambda: reliability(clean.get("calibration")),
        "Flip rates": lambda: flip_rates(
            report.get("perturbations") or {}, report.get("mean_flip_rate")
        ),
        "Adversarial attacks": lambda: attacks(report.get("attacks") or []),
        "Subgroups": lambda: subgroups(report.get("subgroups"), clean.get("error")),
    }
    out = []
    for heading, build in builders.items():
        fig = build()
        if fig is not None:
            out.append((heading, CAPTIONS[heading], png(fig)))
    return out
