"""An anomaly-detection evaluation ("assay.anomaly.evaluation/v1") as one HTML page.

The same kind of page as `assay.client.report_html` (see `assay.client._html`),
but tables only, so it needs no matplotlib: the model and the MVTec-style
folder, image AUROC and, where the folder has ground-truth masks, pixel AUROC,
AUPRO and the per-image AUPIMO (lowest first: the defects the detector
localises worst).

Example:
    >>> write_anomaly_html(client.get_report(job.id), Path("anomaly.html"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assay.client import _html
from assay.client._html import est, finite_or_none, mapping, table, value

__all__ = ["render_anomaly_html", "write_anomaly_html"]

MAX_IMAGES = 40
"""Per-image AUPIMO rows listed at most (the lowest)."""
_NO_MASKS = "not computed (no ground-truth masks)"


def _header(report: Mapping[str, Any]) -> str:
    model, dataset = mapping(report.get("model")), mapping(report.get("dataset"))
    defects = mapping(dataset.get("defect"))
    per = ", ".join(f"{name} {count}" for name, count in defects.items())
    total = sum(n for count in defects.values() if (n := finite_or_none(count)) is not None)
    rows = [
        ("Model", f"{model.get('name', '?')} version {model.get('version') or '-'}"),
        ("Dataset", str(dataset.get("source", "?"))),
        (
            "Images",
            f"{dataset.get('good', '?')} good, {total:.0f} defective"
            + (f" ({per})" if per else ""),
        ),
        ("Schema", str(report.get("schema", "?"))),
    ]
    return _html.header(f"Anomaly detection evaluation: {model.get('name', '?')}", rows)


def _summary(report: Mapping[str, Any]) -> str:
    pimo = [v for raw in mapping(report.get("aupimo")).values() if (v := value(raw)) is not None]
    mean = sum(pimo) / len(pimo) if pimo else None
    rows = [
        ("Image AUROC", est(report.get("image_auroc")), "good vs defective images"),
        ("Pixel AUROC", est(report.get("pixel_auroc"), _NO_MASKS), "every pixel of every image"),
        ("AUPRO", est(report.get("aupro"), _NO_MASKS), "per-region overlap, FPR up to 30 %"),
        ("Mean AUPIMO", est(mean, _NO_MASKS), f"{len(pimo)} defective images, FPR 1e-5 to 1e-4"),
    ]
    return "<h2>Summary</h2>" + table(("Metric", "Value", "Notes"), rows, range(1, 2))


def _per_image(report: Mapping[str, Any]) -> str:
    scores = mapping(report.get("aupimo")).items()
    pimo = [(v, str(k)) for k, raw in scores if (v := value(raw)) is not None]
    if not pimo:
        return ""
    shown = sorted(pimo)[:MAX_IMAGES]
    rows = [(name, f"{score:.1%}") for score, name in shown]
    more = len(pimo) - len(shown)
    note = f'<p class="note">{more} more not listed.</p>' if more > 0 else ""
    return (
        "<h2>AUPIMO per defective image (lowest first)</h2>"
        + table(("Image", "AUPIMO"), rows, range(1, 2))
        + note
    )


def render_anomaly_html(report: Mapping[str, Any]) -> str:
    """Render an anomaly-detection evaluation as one self-contained HTML page.

    Args:
        report: The report document of an "anomaly_evaluation" job, schema
            "assay.anomaly.evaluation/v1"; the mask-based metrics may be null.

    Returns:
        The HTML text: header, summary table and the per-image AUPIMO table.
    """
    body = _header(report) + _summary(report) + _per_image(report)
    name = mapping(report.get("model")).get("name", "?")
    return _html.page(f"Anomaly detection evaluation: {name}", body)


def write_anomaly_html(report: Mapping[str, Any], path: Path) -> Path:
    """Write `render_anomaly_html(report)` as UTF-8 to `path` (its folder must exist)."""
    return _html.write_page(render_anomaly_html(report), path)
