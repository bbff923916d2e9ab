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

The figures are drawn by `assay.client._plots_aigen`; what both read from the
report (threshold, decision rules, colours) is in `assay.client._aigen_view`.

Example:
    >>> write_aigen_html(client.get_report(job.id), Path("aigen.html"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from assay.client import _aigen_view as view
from assay.client import _html
from assay.client._html import est, finite_or_none, mapping, table, value

__all__ = ["render_aigen_html", "write_aigen_html"]

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
    seconds = finite_or_none(x)
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC) if seconds is not None else None
    except (OverflowError, OSError, ValueError):
        moment = None
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "?"


def _settings(report: Mapping[str, Any]) -> str:
    settings = mapping(report.get("settings"))
    if not settings:
        return "not reported"
    limit = settings.get("sample_limit")
    confidence = finite_or_none(settings.get("confidence"))
    return (
        f"{settings.get('bootstrap_resamples', '?')} bootstrap resamples, seed "
        f"{settings.get('seed', '?')}, "
        + (f"{confidence:.0%} intervals, " if confidence is not None else "")
        + (f"sample limit {limit}" if limit is not None else "all images")
    )


def _header(report: Mapping[str, Any]) -> str:
    detector, counts = mapping(report.get("detector")), mapping(report.get("counts"))
    per = ", ".join(f"{g.get('name', '?')} {g.get('count', '?')}" for g in view.generators(report))
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
    title = f"AI-generated image detector evaluation: {detector.get('name', '?')}"
    return _html.header(title, rows)


def _calibration(report: Mapping[str, Any]) -> str:
    """The threshold line; a warning box where the uncalibrated 0.5 rule was used."""
    calibration = mapping(report.get("calibration"))
    note = str(calibration.get("note") or "")
    if not calibration:
        return '<p class="note">Calibration: not reported.</p>'
    if view.uncalibrated(report):
        return (
            f'<div class="warn" role="alert"><h2>{escape(UNCALIBRATED)}</h2>'
            f"<p>{escape(note or 'No detector profile.')}</p><p>Every accuracy below uses "
            "the fixed threshold 0.5 on the detector's probability. AP and AUROC do not "
            "depend on a threshold, but accuracy does: CNNDetection (Wang et al., CVPR 2020) "
            "showed detectors with a high AP whose accuracy at 0.5 is near chance. Fit a "
            "detector profile (a threshold at a target false-positive rate on real images) "
            "before trusting these accuracies.</p></div>"
        )
    threshold, fpr = view.threshold(report), finite_or_none(calibration.get("target_fpr"))
    parts = [f"threshold {threshold:.3g}" if threshold is not None else "threshold ?"]
    parts += [f"target FPR {100 * fpr:g}%"] if fpr is not None else []
    parts += [f"source {calibration.get('source', '?')}"] + ([note] if note else [])
    return f'<p class="calib"><strong>Calibrated</strong>: {escape("; ".join(parts))}</p>'


def _summary(report: Mapping[str, Any]) -> str:
    overall = mapping(report.get("overall"))

    def cell(key: str) -> str:
        return est(overall.get(key), "not computed")

    rows = [
        ("AP", cell("ap"), "threshold-free; generated images are the positive class"),
        ("AUROC", cell("auroc"), "threshold-free"),
    ]
    for label, suffix in view.rules(report):
        rows += [
            (f"Accuracy at {label}", cell(f"accuracy_{suffix}"), "all images"),
            (f"Real accuracy at {label}", cell(f"real_accuracy_{suffix}"), "real kept as real"),
            (f"Generated accuracy at {label}", cell(f"generated_accuracy_{suffix}"), "flagged"),
        ]
    ap, naive = value(overall.get("ap")), value(overall.get("accuracy_at_0_5"))
    gap = (
        f'<p class="note">AP {ap:.1%} but accuracy at 0.5 only {naive:.1%}: the scores rank '
        "images well, yet 0.5 is the wrong threshold for them.</p>"
        if ap is not None and naive is not None and ap - naive >= 0.15
        else ""
    )
    head = ("Metric", f"Value [{view.confidence(report)} CI]", "Notes")
    return "<h2>Summary</h2>" + table(head, rows, range(1, 2)) + gap


def _plain(heading: str, figure: tuple[str, str] | None) -> str:
    """A section that is only a figure; empty where the figure has no data."""
    return "" if figure is None else f"<h2>{escape(heading)}</h2>" + _figure(figure, heading)


def _figure(figure: tuple[str, str] | None, alt: str) -> str:
    return "" if figure is None else _html.figure(*figure, alt)


def _generator_section(report: Mapping[str, Any], figure: tuple[str, str] | None) -> str:
    gens = view.generators(report)
    if not gens:
        return ""
    rules = view.rules(report)
    keys = ["ap", "auroc", *(f"accuracy_{suffix}" for _, suffix in rules)]
    rows = [
        [str(g.get("name", "?")), str(g.get("count", "?")), *(est(g.get(k), "-") for k in keys)]
        for g in gens
    ]
    head = ["Generator", "Images", "AP", "AUROC", *(f"Detected at {label}" for label, _ in rules)]
    scored = [(v, str(g.get("name", "?"))) for g in gens if (v := value(g.get("ap"))) is not None]
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
        + table(head, rows, range(1, len(head)))
        + (f'<p class="note">{escape(note)}</p>' if note else "")
        + _figure(figure, "AP and detection rate per generator")
    )


def _robustness_section(report: Mapping[str, Any], figure: tuple[str, str] | None) -> str:
    rows = [
        [
            what,
            label,
            *(est(mapping(e).get(k), "-") for k in ("ap", "auroc", "accuracy_calibrated")),
        ]
        for kind, what, clean in view.TRANSFORMS
        for label, e in view.robustness(report, kind, clean)
    ]
    if not rows:
        return ""
    head = ("Transform", "Setting", "AP", "AUROC", f"Accuracy at {view.at(report)}")
    return "<h2>Robustness</h2>" + table(head, rows, range(2, 5)) + _figure(figure, "Robustness")


def _examples(report: Mapping[str, Any]) -> str:
    items = _html.items(report.get("examples"))[:MAX_EXAMPLES]
    if not items:
        return ""

    def outcome(correct: Any) -> str:
        return "correct" if correct is True else "mistake" if correct is False else "?"

    rows = [
        [
            str(e.get("path", "?")),
            str(e.get("group", "?")),
            str(e.get("label", "?")),
            "?" if (p := finite_or_none(e.get("probability"))) is None else f"{p:.3f}",
            outcome(e.get("correct")),
        ]
        for e in items
    ]
    head = ("Image", "Group", "True label", "P(generated)", "Outcome")
    return (
        "<h2>Most confident mistakes</h2>"
        '<p class="note">Generated images scored lowest and real images scored highest.</p>'
        + table(head, rows, range(3, 4))
    )


def _warnings(report: Mapping[str, Any]) -> str:
    raw = report.get("warnings")
    items = [str(w) for w in raw if w is not None] if isinstance(raw, list | tuple) else []
    if not items:
        return ""
    return "<h2>Warnings</h2><ul>" + "".join(f"<li>{escape(w)}</li>" for w in items) + "</ul>"


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
        MissingPlotsError: A RuntimeError, if matplotlib (the ``report`` extra) is missing.
    """
    figures = _html.plots("aigen").render_all(report)
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
    name = mapping(report.get("detector")).get("name", "?")
    return _html.page(f"AI-generated image detector evaluation: {name}", body, _AIGEN_CSS)


def write_aigen_html(report: Mapping[str, Any], path: Path) -> Path:
    """Write `render_aigen_html(report)` as UTF-8 to `path` (its folder must exist); return it."""
    return _html.write_page(render_aigen_html(report), path)
