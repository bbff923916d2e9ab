"""An AI-generated-image detector evaluation ("assay.aigen.evaluation/v1") as one HTML page.

The same kind of page as `assay.client.report_html` and
`assay.client.ood_report_html`: inline CSS, figures embedded as base64 PNG data
URIs, no JavaScript, nothing fetched (its Content-Security-Policy forbids it
too), every string from the report HTML-escaped. It shows the detector, its
crop policy and how its threshold was chosen (a prominent warning where no
detector profile was fitted and the raw 0.5 rule decided), the overall metrics
with their bootstrap intervals, the metrics per generator (so that a generator
the detector was not trained on stands out), ROC and precision-recall curves,
score histograms, robustness to JPEG re-saves and down-scaling, mean power
spectra, the most confident mistakes and the evaluation's warnings. Every
section whose data is missing or null is left out or says so. The figures
need the optional matplotlib dependency (``pip install 'assay[report]'``).

The module is longer than ~300 lines for the same reason as the OOD report:
the page and its figures serve one report schema and change together.

Example:
    >>> write_aigen_html(client.get_report(job.id), Path("aigen.html"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from assay.client.report_html import _CSP, _CSS, _MISSING, _est, _num, _table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["render_aigen_html", "write_aigen_html"]

MAX_CURVES = 10
"""Generators drawn in one curve, histogram or spectrum figure at most (one colour each)."""
MAX_EXAMPLES = 20
"""Confident mistakes listed at most."""
UNCALIBRATED = "Uncalibrated threshold: the raw 0.5 rule decided"
"""Heading of the warning shown when the report's calibration source is "default"."""

_AIGEN_CSS = """
.warn{border:2px solid #cf222e;background:#ffebe9;border-radius:6px;padding:.3rem 1rem .8rem;
margin:1.5rem 0}.warn h2{color:#a40e26;border:none;margin-top:.6rem}
p.calib{border-left:4px solid #1a7f37;background:#dafbe1;padding:.4rem .8rem}
p.note{color:#59636e;font-size:.9rem}
"""
_REAL, _OVERALL = "0.35", "k"
_TRANSFORMS = (
    ("jpeg", "JPEG quality", "none"),
    ("resize", "down-scale factor", "1 (none)"),
)
"""(robustness key, what its param is, label of the clean point drawn first)."""

# ------------------------------------------------------------------ report access


def _mapping(x: Any) -> Mapping[str, Any]:
    """`x` where it is a mapping, else an empty one."""
    return x if isinstance(x, Mapping) else {}


def _items(x: Any) -> list[Mapping[str, Any]]:
    """The mappings of a report list, [] where it is not a list."""
    return [i for i in x if isinstance(i, Mapping)] if isinstance(x, list | tuple) else []


def _value(e: Any) -> float | None:
    """The value of an estimate E (or a bare number), None where missing."""
    return _num(e.get("value") if isinstance(e, Mapping) else e)


def _floats(values: Any) -> list[float]:
    """A list of finite report numbers, or [] where absent or any item is not one."""
    if not isinstance(values, list | tuple):
        return []
    floats = [v for v in map(_num, values) if v is not None]
    return floats if len(floats) == len(values) else []


def _generators(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return _items(report.get("generators"))


def _colors(report: Mapping[str, Any]) -> dict[str, str]:
    """One matplotlib colour per generator name, the same in every figure."""
    names = [str(g.get("name")) for g in _generators(report)]
    curves = _mapping(_mapping(report.get("curves")).get("by_generator"))
    generated = _mapping(_mapping(report.get("histogram")).get("generated"))
    spectra = _mapping(_mapping(report.get("spectra")).get("by_group"))
    names += [str(n) for n in (*curves, *generated, *spectra) if n != "real"]
    return {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(names))}


def _threshold(report: Mapping[str, Any]) -> float | None:
    return _num(_mapping(report.get("calibration")).get("threshold"))


def _uncalibrated(report: Mapping[str, Any]) -> bool:
    return _mapping(report.get("calibration")).get("source") == "default"


def _at(report: Mapping[str, Any]) -> str:
    """The decision threshold as a label: "0.73"; "0.5" where no profile was fitted."""
    threshold = _threshold(report)
    if _uncalibrated(report):
        return "0.5"
    return "the threshold" if threshold is None else f"{threshold:.3g}"


def _rules(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, key suffix) per decision rule shown; without a profile both are the 0.5 rule."""
    if _uncalibrated(report):
        return [("0.5", "at_0_5")]
    return [(_at(report), "calibrated"), ("0.5", "at_0_5")]


def _confidence(report: Mapping[str, Any]) -> str:
    value = _num(_mapping(report.get("settings")).get("confidence"))
    return f"{100 * (value or 0.95):g} %"


def _robustness(report: Mapping[str, Any], kind: str, clean: str) -> list[tuple[str, Any]]:
    """(label, entry) per setting, mildest first, the clean point (overall metrics) first."""
    entries = [
        (p, r)
        for r in _items(_mapping(report.get("robustness")).get(kind))
        if (p := _num(r.get("param"))) is not None
    ]
    if not entries:
        return []
    entries.sort(key=lambda pr: -pr[0])
    return [(clean, report.get("overall")), *((f"{p:g}", r) for p, r in entries)]


# ------------------------------------------------------------------ HTML parts


def _policy(detector: Mapping[str, Any]) -> str:
    policy, aggregation = detector.get("policy"), str(detector.get("aggregation") or "?")
    if policy == "resize":
        return "resize: each image resized to the model input (the training policy)"
    if policy != "crops":
        return "not reported" if policy is None else str(policy)
    how = {
        "top_k_mean": f"mean of top {detector.get('top_k', '?')}",
        "mean": "mean over the crops",
        "max": "maximum over the crops",
    }.get(aggregation, aggregation)
    return f"crops: up to {detector.get('max_crops', '?')} native-resolution crops, {how}"


def _created(x: Any) -> str:
    seconds = _num(x)
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC) if seconds is not None else None
    except (OverflowError, OSError, ValueError):
        moment = None
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "?"


def _settings(report: Mapping[str, Any]) -> str:
    settings = _mapping(report.get("settings"))
    if not settings:
        return "not reported"
    limit = settings.get("sample_limit")
    confidence = _num(settings.get("confidence"))
    return (
        f"{settings.get('bootstrap_resamples', '?')} bootstrap resamples, seed "
        f"{settings.get('seed', '?')}, "
        + (f"{confidence:.0%} intervals, " if confidence is not None else "")
        + (f"sample limit {limit}" if limit is not None else "all images")
    )


def _header(report: Mapping[str, Any]) -> str:
    detector, counts = _mapping(report.get("detector")), _mapping(report.get("counts"))
    per = ", ".join(f"{g.get('name', '?')} {g.get('count', '?')}" for g in _generators(report))
    rows = [
        ("Detector", f"{detector.get('name', '?')} version {detector.get('version') or '-'}"),
        ("Policy", _policy(detector)),
        ("Dataset", str(report.get("dataset") or "?")),
        (
            "Images",
            f"{counts.get('real', '?')} real, {counts.get('generated', '?')} generated"
            + (f" ({per})" if per else ""),
        ),
        ("Settings", _settings(report)),
        ("Created", _created(report.get("created_at"))),
        ("Schema", str(report.get("schema", "?"))),
    ]
    meta = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    title = f"AI-generated image detector evaluation: {detector.get('name', '?')}"
    return f"<h1>{escape(title)}</h1><table>{meta}</table>"


def _calibration(report: Mapping[str, Any]) -> str:
    """The threshold line; a warning box where the uncalibrated 0.5 rule was used."""
    calibration = _mapping(report.get("calibration"))
    note = str(calibration.get("note") or "")
    if not calibration:
        return '<p class="note">Calibration: not reported.</p>'
    if _uncalibrated(report):
        return (
            f'<div class="warn" role="alert"><h2>{escape(UNCALIBRATED)}</h2>'
            f"<p>{escape(note or 'No detector profile.')}</p><p>Every accuracy below uses "
            "the fixed threshold 0.5 on the detector's probability. AP and AUROC do not "
            "depend on a threshold, but accuracy does: CNNDetection (Wang et al., CVPR 2020) "
            "showed detectors with a high AP whose accuracy at 0.5 is near chance. Fit a "
            "detector profile (a threshold at a target false-positive rate on real images) "
            "before trusting these accuracies.</p></div>"
        )
    threshold, fpr = _threshold(report), _num(calibration.get("target_fpr"))
    parts = [f"threshold {threshold:.3g}" if threshold is not None else "threshold ?"]
    parts += [f"target FPR {100 * fpr:g}%"] if fpr is not None else []
    parts += [f"source {calibration.get('source', '?')}"] + ([note] if note else [])
    return f'<p class="calib"><strong>Calibrated</strong>: {escape("; ".join(parts))}</p>'


def _summary(report: Mapping[str, Any]) -> str:
    overall = _mapping(report.get("overall"))

    def cell(key: str) -> str:
        return _est(overall.get(key), "not computed")

    rows = [
        ("AP", cell("ap"), "threshold-free; generated images are the positive class"),
        ("AUROC", cell("auroc"), "threshold-free"),
    ]
    for label, suffix in _rules(report):
        rows += [
            (f"Accuracy at {label}", cell(f"accuracy_{suffix}"), "all images"),
            (f"Real accuracy at {label}", cell(f"real_accuracy_{suffix}"), "real kept as real"),
            (f"Generated accuracy at {label}", cell(f"generated_accuracy_{suffix}"), "flagged"),
        ]
    ap, naive = _value(overall.get("ap")), _value(overall.get("accuracy_at_0_5"))
    gap = (
        f'<p class="note">AP {ap:.1%} but accuracy at 0.5 only {naive:.1%}: the scores rank '
        "images well, yet 0.5 is the wrong threshold for them.</p>"
        if ap is not None and naive is not None and ap - naive >= 0.15
        else ""
    )
    head = ("Metric", f"Value [{_confidence(report)} CI]", "Notes")
    return "<h2>Summary</h2>" + _table(head, rows, range(1, 2)) + gap


def _figure(figure: tuple[str, str] | None, alt: str) -> str:
    if figure is None:
        return ""
    caption, data = figure
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _plain(heading: str, figure: tuple[str, str] | None) -> str:
    """A section that is only a figure; empty where the figure has no data."""
    return "" if figure is None else f"<h2>{escape(heading)}</h2>" + _figure(figure, heading)


def _generator_section(report: Mapping[str, Any], figure: tuple[str, str] | None) -> str:
    gens = _generators(report)
    if not gens:
        return ""
    rules = _rules(report)
    keys = ["ap", "auroc", *(f"accuracy_{suffix}" for _, suffix in rules)]
    rows = [
        [str(g.get("name", "?")), str(g.get("count", "?")), *(_est(g.get(k), "-") for k in keys)]
        for g in gens
    ]
    head = ["Generator", "Images", "AP", "AUROC", *(f"Detected at {label}" for label, _ in rules)]
    scored = [(v, str(g.get("name", "?"))) for g in gens if (v := _value(g.get("ap"))) is not None]
    note = ""
    if len(scored) > 1:
        (low, worst), (high, best) = min(scored), max(scored)
        note = (
            f"Highest AP {best} ({high:.1%}), lowest {worst} ({low:.1%}): a gap of "
            f"{100 * (high - low):.1f} points. A generator far below the others is one the "
            "detector does not generalise to (often one unseen in training)."
        )
    return (
        "<h2>Per generator</h2>"
        '<p class="note">AP and AUROC: all real images against this generator\'s images. '
        "Detected: the share of this generator's images flagged as generated.</p>"
        + _table(head, rows, range(1, len(head)))
        + (f'<p class="note">{escape(note)}</p>' if note else "")
        + _figure(figure, "AP and detection rate per generator")
    )


def _robustness_section(report: Mapping[str, Any], figure: tuple[str, str] | None) -> str:
    rows = [
        [
            what,
            label,
            *(_est(_mapping(e).get(k), "-") for k in ("ap", "auroc", "accuracy_calibrated")),
        ]
        for kind, what, clean in _TRANSFORMS
        for label, e in _robustness(report, kind, clean)
    ]
    if not rows:
        return ""
    head = ("Transform", "Setting", "AP", "AUROC", f"Accuracy at {_at(report)}")
    return "<h2>Robustness</h2>" + _table(head, rows, range(2, 5)) + _figure(figure, "Robustness")


def _examples(report: Mapping[str, Any]) -> str:
    items = _items(report.get("examples"))[:MAX_EXAMPLES]
    if not items:
        return ""

    def outcome(correct: Any) -> str:
        return "correct" if correct is True else "mistake" if correct is False else "?"

    rows = [
        [
            str(e.get("path", "?")),
            str(e.get("group", "?")),
            str(e.get("label", "?")),
            "?" if (p := _num(e.get("probability"))) is None else f"{p:.3f}",
            outcome(e.get("correct")),
        ]
        for e in items
    ]
    head = ("Image", "Group", "True label", "P(generated)", "Outcome")
    return (
        "<h2>Most confident mistakes</h2>"
        '<p class="note">Generated images scored lowest and real images scored highest.</p>'
        + _table(head, rows, range(3, 4))
    )


def _warnings(report: Mapping[str, Any]) -> str:
    raw = report.get("warnings")
    items = [str(w) for w in raw if w is not None] if isinstance(raw, list | tuple) else []
    if not items:
        return ""
    return "<h2>Warnings</h2><ul>" + "".join(f"<li>{escape(w)}</li>" for w in items) + "</ul>"


# ------------------------------------------------------------------ figures


def _generator_bars(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """AP and detection rate per generator, with CI error bars and the overall AP as a band."""
    from matplotlib.figure import Figure

    from assay.client._report_plots import BASELINE, MODEL, _band, _ests, _names_axis

    gens = _generators(report)
    if not gens:
        return None
    fig = Figure(figsize=(min(14.0, max(6.5, 0.7 * len(gens) + 4)), 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(gens))
    for offset, key, color, label in (
        (-0.2, "ap", MODEL, "AP (vs all real images)"),
        (0.2, "accuracy_calibrated", BASELINE, f"detected at {_at(report)}"),
    ):
        values, err = _ests([g.get(key) for g in gens])
        bars = ax.bar(x + offset, values, 0.4, yerr=err, capsize=3, color=color, label=label)
        labels = [f"{v:.0f}" if math.isfinite(v) else "n/a" for v in values]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    _band(ax, _mapping(report.get("overall")).get("ap"), "k", "overall AP")
    _names_axis(ax, [str(g.get("name", "?")) for g in gens])
    title = f"AP and detection rate per generator ({_confidence(report)} CI)"
    ax.set(ylim=(0, 112), ylabel="%", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    caption = (
        "Per generator: AP of all real images against its images, and the share of its "
        "images flagged at the threshold. Low bars mark generators the detector misses."
    )
    return caption, fig


def _xy(curve: Any, x_key: str, y_key: str) -> tuple[list[float], list[float]] | None:
    x, y = _floats(_mapping(curve).get(x_key)), _floats(_mapping(curve).get(y_key))
    return (x, y) if x and len(x) == len(y) else None


def _curves(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """ROC and PR curves: all generators (black, bold), then each generator."""
    from matplotlib.figure import Figure

    from assay.client._report_plots import percent, text

    curves = _mapping(report.get("curves"))
    by_gen, colors = _mapping(curves.get("by_generator")), _colors(report)
    metrics = {str(g.get("name")): g for g in _generators(report)}
    lines = [("all generators", curves, _mapping(report.get("overall")), _OVERALL)]
    lines += [
        (str(n), _mapping(by_gen[n]), _mapping(metrics.get(str(n))), colors.get(str(n), "C9"))
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
            name = f"{label} (AUROC {percent(_value(metric.get('auroc')))})"
            roc_ax.plot(*roc, color=color, linewidth=width, label=text(name))
        if pr := _xy(curve.get("pr"), "recall", "precision"):
            name = f"{label} (AP {percent(_value(metric.get('ap')))})"
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
    values = _floats(counts)
    if not values or len(edges) != len(values) + 1 or sum(values) <= 0:
        return None
    return [100 * v / sum(values) for v in values]


def _histogram(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """P(generated) per group as percent of its images, with the decision threshold."""
    from matplotlib.figure import Figure

    from assay.client._report_plots import text

    hist = _mapping(report.get("histogram"))
    edges = _floats(hist.get("edges"))
    if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)):
        return None
    colors = _colors(report)
    groups = [("real", hist.get("real"), _REAL)] + [
        (str(n), c, colors.get(str(n), "C9"))
        for n, c in list(_mapping(hist.get("generated")).items())[:MAX_CURVES]
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
    threshold = _threshold(report)
    if threshold is not None and not _uncalibrated(report) and threshold != 0.5:
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
    from matplotlib.figure import Figure

    from assay.client._report_plots import MODEL, est

    kinds = [(w, pts) for k, w, c in _TRANSFORMS if (pts := _robustness(report, k, c))]
    if not kinds:
        return None
    band = f"{_confidence(report)} CI"
    fig = Figure(figsize=(10.0, 3.4 * len(kinds) + 0.4), layout="constrained")
    axes = fig.subplots(len(kinds), 2, squeeze=False)
    for row, (what, points) in zip(axes, kinds, strict=True):
        x = list(range(len(points)))
        for ax, key, name in zip(
            row, ("ap", "accuracy_calibrated"), ("AP", f"accuracy at {_at(report)}"), strict=True
        ):
            triples = [est(_mapping(e).get(key)) for _, e in points]
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
    caption += f"images first; bands: {_confidence(report)} bootstrap intervals."
    return caption, fig


def _spectra(report: Mapping[str, Any]) -> tuple[str, Figure] | None:
    """Mean log power spectrum per group and, beside it, each group minus the real images."""
    from matplotlib.figure import Figure

    from assay.client._report_plots import text

    spectra = _mapping(report.get("spectra"))
    freq, colors = _floats(spectra.get("frequency")), _colors(report)
    groups = {
        str(n): v
        for n, raw in _mapping(spectra.get("by_group")).items()
        if freq and len(v := _floats(raw)) == len(freq)
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
    crop = _num(spectra.get("crop"))
    caption = "Azimuthally averaged log power spectrum of each image's noise residual"
    caption += f" ({crop:.0f} px tiles)" if crop is not None else ""
    caption += ", averaged per group; generators' up-sampling often leaves excess power at "
    caption += "high frequencies."
    return caption, fig


_FIGURES: dict[str, Callable[[Mapping[str, Any]], tuple[str, Figure] | None]] = {
    "generators": _generator_bars,
    "curves": _curves,
    "histogram": _histogram,
    "robustness": _robustness_figure,
    "spectra": _spectra,
}


def _all_figures(report: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """(caption, base64 PNG) per section with data; RuntimeError without matplotlib."""
    try:
        from assay.client._report_plots import png
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "matplotlib":
            raise RuntimeError(_MISSING) from None
        raise
    out = {}
    for key, build in _FIGURES.items():
        built = build(report)
        if built is not None:
            out[key] = (built[0], png(built[1]))
    return out


# ------------------------------------------------------------------ public API


def render_aigen_html(report: Mapping[str, Any]) -> str:
    """Render an AI-generated-image detector evaluation as one self-contained HTML page.

    Args:
        report: The report document (``json.loads`` of the evaluation job's report),
            schema "assay.aigen.evaluation/v1". Every section but the header may be
            missing or null; it is then left out or marked "not computed".

    Returns:
        The HTML text: header and calibration, summary table, per-generator table
        and bars, ROC and PR curves, score histogram, robustness, spectra, the most
        confident mistakes and the warnings, every figure embedded as a base64 PNG.

    Raises:
        RuntimeError: If matplotlib (the ``report`` extra) is not installed.
    """
    figures = _all_figures(report)
    body = (
        _header(report)
        + _calibration(report)
        + _summary(report)
        + _generator_section(report, figures.get("generators"))
        + _plain("ROC and precision-recall curves", figures.get("curves"))
        + _plain("Score histogram", figures.get("histogram"))
        + _robustness_section(report, figures.get("robustness"))
        + _plain("Mean power spectra", figures.get("spectra"))
        + _examples(report)
        + _warnings(report)
    )
    name = _mapping(report.get("detector")).get("name", "?")
    title = escape(f"AI-generated image detector evaluation: {name}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}{_AIGEN_CSS}</style></head>\n"
        f"<body>{body}</body></html>\n"
    )


def write_aigen_html(report: Mapping[str, Any], path: Path) -> Path:
    """Render a report (see `render_aigen_html`) and write it as UTF-8 to `path`.

    Args:
        report: The report document.
        path: Where to write the page; its folder must exist.

    Returns:
        The path written.

    Raises:
        RuntimeError: If matplotlib (the ``report`` extra) is not installed.
    """
    path = Path(path)
    path.write_text(render_aigen_html(report), encoding="utf-8")
    return path
