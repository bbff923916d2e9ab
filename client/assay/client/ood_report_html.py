"""An OOD detector evaluation (schema "assay.ood.evaluation/v1") as one self-contained HTML page.

The same kind of page as `assay.client.report_html`: inline CSS, figures embedded
as base64 PNG data URIs, no JavaScript, nothing fetched (its
Content-Security-Policy forbids it too), every string from the report
HTML-escaped. It shows the model and data sets, a prominent warning for each
OOD set that looks contaminated with in-distribution images, the ranking of the
scorers (the recommended default highlighted) and, per OOD set, the metrics
with their bootstrap intervals, ROC curves and score histograms. The figures
need the optional matplotlib dependency (``pip install 'assay[report]'``).

Example:
    >>> write_ood_html(client.get_report(job.id), Path("ood.html"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from assay.client import _html
from assay.client._html import est, finite_or_none, floats, mapping, pct, table, value

__all__ = ["render_ood_html", "write_ood_html"]

MAX_ROC_LINES = 10
"""Scorers drawn in one ROC figure at most (the best ranked; one colour each)."""
MAX_PANELS = 9
"""Histogram panels per OOD set at most (the best-ranked scorers)."""
MAX_OFFENDERS = 10
"""Offenders listed per contaminated OOD set at most (the most confident)."""

_OOD_CSS = """
h3{font-size:1rem;margin:1.2rem 0 .3rem}
.warn{border:2px solid #cf222e;background:#ffebe9;border-radius:6px;padding:.3rem 1rem .8rem;
margin:1.5rem 0}.warn h2{color:#a40e26;border:none;margin-top:.6rem}
tr.recommended td{background:#dafbe1;font-weight:600}
p.flag{color:#a40e26;font-weight:600}p.note{color:#59636e;font-size:.9rem}
"""

FloatArray = npt.NDArray[np.float64]


class RocLine(NamedTuple):
    """One scorer's ROC curve on one OOD set."""

    color: str
    scorer: str
    auroc: float | None
    fpr: list[float]
    tpr: list[float]


class ScorePanel(NamedTuple):
    """One scorer's score densities on one OOD set (None where a side has no counts)."""

    scorer: str
    auroc: float | None
    edges: list[float]
    inside: FloatArray | None
    outside: FloatArray | None


# ------------------------------------------------------------------ report access


def _results(report: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(report.get("results"))


def _scorers(report: Mapping[str, Any]) -> list[str]:
    """Every scorer, best first: the ranking's order, then any scorer it lacks."""
    ranked = [r.get("scorer") for r in report.get("ranking") or [] if isinstance(r, Mapping)]
    return [str(s) for s in dict.fromkeys([*ranked, *_results(report)]) if s is not None]


def _sets(report: Mapping[str, Any]) -> list[str]:
    """Every OOD set: the header's order, then any set only the results name."""
    found = [n for per in _results(report).values() if isinstance(per, Mapping) for n in per]
    return [str(n) for n in dict.fromkeys([*(report.get("ood_datasets") or {}), *found])]


def _entry(report: Mapping[str, Any], scorer: str, ood_set: str) -> Mapping[str, Any]:
    """``results[scorer][ood_set]``, empty where missing."""
    return mapping(mapping(_results(report).get(scorer)).get(ood_set))


def _settings(report: Mapping[str, Any]) -> tuple[float, float]:
    """(TPR of the FPR metric, interval confidence) of the first result, else (0.95, 0.95)."""
    for per in _results(report).values():
        for entry in mapping(per).values():
            if isinstance(entry, Mapping):
                auroc = entry.get("auroc")
                confidence = auroc.get("confidence") if isinstance(auroc, Mapping) else None
                return finite_or_none(entry.get("tpr")) or 0.95, finite_or_none(confidence) or 0.95
    return 0.95, 0.95


def _density(edges: Sequence[float], counts: Any) -> FloatArray | None:
    """Histogram counts as a density (integrating to 1 over `edges`), None where unusable."""
    values = np.asarray(floats(counts), dtype=np.float64)
    widths = np.diff(np.asarray(edges, dtype=np.float64))
    if values.size == 0 or len(edges) != values.size + 1 or (widths <= 0).any():
        return None
    total = float(values.sum())
    if total <= 0:
        return None
    density: FloatArray = values / (total * widths)
    return density


# ------------------------------------------------------------------ HTML parts


def _dataset(d: Any) -> str:
    d = mapping(d)
    return f"{d.get('source', '?')}: {d.get('images', '?')} images"


def _header(report: Mapping[str, Any], scorers: Sequence[str]) -> str:
    model = report.get("model") or {}
    rows = [
        ("Model", f"{model.get('name', '?')} version {model.get('version') or '-'}"),
        ("In-distribution set", _dataset(report.get("in_dataset"))),
    ]
    rows += [
        (f"OOD set {name}", _dataset(d)) for name, d in (report.get("ood_datasets") or {}).items()
    ]
    rows += [
        ("Scorers", f"{len(scorers)}: {', '.join(scorers)}" if scorers else "none"),
        ("Recommended scorer", str(report.get("recommended") or "none")),
        ("Schema", str(report.get("schema", "?"))),
    ]
    return _html.header(f"OOD detector evaluation: {model.get('name', '?')}", rows)


def _contamination_line(warning: Mapping[str, Any]) -> str:
    count, total = finite_or_none(warning.get("count")), finite_or_none(warning.get("total"))
    threshold = finite_or_none(warning.get("threshold"))
    if count is None or not total or threshold is None:
        return str(warning.get("message") or "This OOD set may be contaminated.")
    return (
        f"{count:.0f} of {total:.0f} images ({count / total:.1%}) are classified as an "
        f"in-distribution class with confidence ≥ {threshold:g}: the set may contain "
        "in-distribution objects, which makes every detector look worse on it."
    )


def _offenders(warning: Mapping[str, Any]) -> str:
    items = [o for o in warning.get("offenders") or [] if isinstance(o, Mapping)]
    if not items:
        return ""
    shown = items[:MAX_OFFENDERS]
    rows = [
        [
            str(o.get("index", "?")),
            str(o.get("class_name", "?")),
            "?" if (c := finite_or_none(o.get("confidence"))) is None else f"{c:.3f}",
        ]
        for o in shown
    ]
    more = (
        f'<p class="note">{len(items) - len(shown)} more not listed.</p>'
        if len(items) > len(shown)
        else ""
    )
    head = ("Image index", "Predicted in-distribution class", "Confidence")
    return "<p>Most confident offenders:</p>" + table(head, rows, range(2, 3)) + more


def _contamination(report: Mapping[str, Any]) -> str:
    """The warning box (empty where no OOD set was flagged)."""
    warnings = {
        str(name): w
        for name, w in (report.get("contamination") or {}).items()
        if isinstance(w, Mapping)
    }
    if not warnings:
        return ""
    parts = "".join(
        f"<h3>OOD set {escape(name)}</h3><p>{escape(_contamination_line(w))}</p>{_offenders(w)}"
        for name, w in warnings.items()
    )
    return (
        '<div class="warn" role="alert"><h2>Warning: possibly contaminated OOD sets</h2>'
        "<p>The model confidently assigns many images of these OOD sets to an "
        "in-distribution class (a screen after Bitterwolf et al. 2023, &quot;In or Out?&quot;). "
        "Check the listed images before trusting their metrics.</p>"
        f"{parts}</div>"
    )


def _ranking(report: Mapping[str, Any], fpr_label: str) -> str:
    items = [r for r in report.get("ranking") or [] if isinstance(r, Mapping)]
    if not items:
        return "<h2>Ranking</h2><p>No ranking in this report.</p>"
    recommended = report.get("recommended")
    rows = [
        [
            str(rank),
            f"{r.get('scorer', '?')}"
            + (" (recommended)" if r.get("scorer") == recommended else ""),
            pct(r.get("mean_auroc")),
            pct(r.get("mean_fpr_at_tpr")),
        ]
        for rank, r in enumerate(items, start=1)
    ]
    marked = [r.get("scorer") == recommended for r in items]
    head = ("Rank", "Scorer", "Mean AUROC", f"Mean {fpr_label}")
    return (
        "<h2>Ranking of the scorers</h2>"
        '<p class="note">Best first: highest mean AUROC over the OOD sets, ties broken by the '
        "lowest mean FPR. The first is the recommended default.</p>"
        + table(head, rows, range(2, 4), marked)
    )


def _set_section(
    report: Mapping[str, Any],
    name: str,
    scorers: Sequence[str],
    fpr_label: str,
    figures: Sequence[tuple[str, str, str]],
) -> str:
    entries = [_entry(report, s, name) for s in scorers]
    first = next((e for e in entries if e), {})
    dataset = (report.get("ood_datasets") or {}).get(name)
    line = (
        f"{_dataset(dataset) if dataset else 'no dataset details'}; scored: "
        f"{first.get('n_in', '?')} in-distribution vs {first.get('n_out', '?')} OOD images."
    )
    flag = (
        '<p class="flag">Possibly contaminated: see the warning above.</p>'
        if name in (report.get("contamination") or {})
        else ""
    )
    recommended = report.get("recommended")
    rows = [
        [
            s + (" (recommended)" if s == recommended else ""),
            *(
                est(e.get(key), "-")
                for key in ("auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "detection_accuracy")
            ),
        ]
        for s, e in zip(scorers, entries, strict=True)
    ]
    head = ("Scorer", "AUROC", "AUPR-In", "AUPR-Out", fpr_label, "Detection accuracy")
    metrics = table(head, rows, range(1, 6), [s == recommended for s in scorers])
    plots = _html.figures(figures, "h3")
    return f"<h2>OOD set {escape(name)}</h2><p>{escape(line)}</p>{flag}{metrics}{plots}"


# ------------------------------------------------------------------ figures (drawn by _plots_ood)


def _roc_lines(report: Mapping[str, Any], name: str, scorers: Sequence[str]) -> list[RocLine]:
    curves = []
    for i, scorer in enumerate(scorers):
        entry = _entry(report, scorer, name)
        roc = mapping(entry.get("roc"))
        fpr, tpr = floats(roc.get("fpr")), floats(roc.get("tpr"))
        if fpr and len(fpr) == len(tpr):
            curves.append(RocLine(f"C{i % 10}", scorer, value(entry.get("auroc")), fpr, tpr))
    return curves


def _panels(report: Mapping[str, Any], name: str, scorers: Sequence[str]) -> list[ScorePanel]:
    panels = []
    for scorer in scorers:
        entry = _entry(report, scorer, name)
        hist = mapping(entry.get("histogram"))
        edges = floats(hist.get("edges"))
        inside, outside = _density(edges, hist.get("in")), _density(edges, hist.get("out"))
        if inside is not None or outside is not None:
            auroc = value(entry.get("auroc"))
            panels.append(ScorePanel(scorer, auroc, edges, inside, outside))
    return panels


def _more(shown: int, total: int) -> str:
    return f" {total - shown} more scorers not shown." if total > shown else ""


def _set_figures(
    plots: ModuleType,
    report: Mapping[str, Any],
    name: str,
    scorers: Sequence[str],
    tpr: float,
    fpr_label: str,
) -> list[tuple[str, str, str]]:
    """(heading, caption, base64 PNG) of the OOD set's ROC curves and histograms, with data."""
    recommended = report.get("recommended")
    out = []
    lines = _roc_lines(report, name, scorers)
    if lines:
        caption = (
            "ROC curve of each scorer with OOD as the positive class (bold: the recommended "
            f"scorer; dotted: chance). Dashed: {tpr:.0%} of the in-distribution images kept; "
            f"1 - TPR there is the {fpr_label} of the table." + _more(MAX_ROC_LINES, len(lines))
        )
        figure = plots.roc(lines[:MAX_ROC_LINES], recommended, tpr)
        out.append((f"ROC curves: {name}", caption, figure))
    panels = _panels(report, name, scorers)
    if panels:
        caption = (
            "Score distributions of the in-distribution and OOD images per scorer, each "
            "normalised to unit area; less overlap means better separation."
            + _more(MAX_PANELS, len(panels))
        )
        figure = plots.histograms(panels[:MAX_PANELS], recommended)
        out.append((f"Score histograms: {name}", caption, figure))
    return out


# ------------------------------------------------------------------ public API


def render_ood_html(report: Mapping[str, Any]) -> str:
    """Render an OOD detector evaluation as one self-contained HTML page.

    Args:
        report: The report document (``json.loads`` of the "ood_evaluation" job's
            report), schema "assay.ood.evaluation/v1".

    Returns:
        The HTML text: header, contamination warnings (where any), the ranking of
        the scorers and, per OOD set, its metrics table, ROC curves and score
        histograms, every figure embedded as a base64 PNG.

    Raises:
        MissingPlotsError: A RuntimeError, if matplotlib (the ``report`` extra) is missing.
    """
    scorers, sets = _scorers(report), _sets(report)
    tpr, confidence = _settings(report)
    fpr_label = f"FPR@{100 * tpr:g}TPR"
    plots = _html.plots("ood")
    figures = {n: _set_figures(plots, report, n, scorers, tpr, fpr_label) for n in sets}
    note = (
        '<p class="note">Higher scores mean more OOD. Brackets: '
        f"{confidence:.0%} bootstrap intervals. AUROC, AUPR and detection accuracy: higher is "
        f"better. {fpr_label}: the share of OOD images accepted when {tpr:.0%} of the "
        "in-distribution images are; lower is better.</p>"
    )
    title = f"OOD detector evaluation: {(report.get('model') or {}).get('name', '?')}"
    body = (
        _header(report, scorers)
        + _contamination(report)
        + _ranking(report, fpr_label)
        + note
        + "".join(_set_section(report, n, scorers, fpr_label, figures[n]) for n in sets)
    )
    return _html.page(title, body, _OOD_CSS)


def write_ood_html(report: Mapping[str, Any], path: Path) -> Path:
    """Write `render_ood_html(report)` as UTF-8 to `path` (its folder must exist); return it."""
    return _html.write_page(render_ood_html(report), path)
