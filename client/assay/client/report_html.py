"""A robustness report (schema "assay.robustness.report/v1") as one self-contained HTML page.

The page has inline CSS and its figures embedded as base64 PNG data URIs: no
JavaScript, no external files, nothing fetched (its Content-Security-Policy
forbids it too). Every string taken from the report is HTML-escaped. The
figures need the optional matplotlib dependency (``pip install 'assay[report]'``).

Example:
    >>> write_html(json.loads(report_json), Path("robustness.html"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from assay.client import _html
from assay.client._html import est, finite_or_none, pct, table

__all__ = ["render_html", "write_html"]


def _suite_summary(report: Mapping[str, Any]) -> str:
    """The suite in one line: preset, overrides, what ran, sample limit and bootstrap."""
    suite, spec = report.get("suite") or {}, report.get("spec") or {}
    overrides = ", ".join(sorted(spec.get("overrides") or {}))
    parts = [
        f"preset {spec.get('preset') or 'default'}"
        + (f" with overrides ({overrides})" if overrides else "")
    ]
    corruptions, severities = suite.get("corruptions") or [], suite.get("severities") or []
    parts.append(
        f"{len(corruptions)} corruptions x severities {', '.join(str(s) for s in severities)}"
        if corruptions
        else "no corruptions"
    )
    perturbations = suite.get("perturbations") or []
    parts.append(
        f"{len(perturbations)} perturbations ({suite.get('perturbation_frames')} frames)"
        if perturbations
        else "no perturbations"
    )
    flags = {
        "shift_consistency": "shift consistency",
        "calibration": "calibration",
        "subgroups": "subgroups",
    }
    parts += [f"{name} {'on' if suite.get(key) else 'off'}" for key, name in flags.items()]
    parts.append(f"{len(suite.get('attacks') or report.get('attacks') or [])} attacks")
    limit = suite.get("sample_limit")
    parts.append(f"sample limit {limit}" if limit else "all images")
    parts.append(
        f"{suite.get('bootstrap_resamples', '?')} bootstrap resamples, "
        f"seed {suite.get('seed', '?')}"
    )
    return "; ".join(parts)


def _header(report: Mapping[str, Any]) -> str:
    model, dataset = report.get("model") or {}, report.get("dataset") or {}
    baseline = (report.get("baseline") or {}).get("name")
    mce_baseline = report.get("mce_baseline")
    baseline_text = " / ".join(str(b) for b in (baseline, mce_baseline) if b) or "none"
    rows = [
        (
            "Model",
            f"{model.get('name', '?')} version {model.get('version') or '-'} "
            f"({model.get('backend', '?')} backend)",
        ),
        (
            "Dataset",
            f"{dataset.get('source', '?')}: {dataset.get('images', '?')} images, "
            f"{dataset.get('classes', '?')} classes",
        ),
        ("Suite", _suite_summary(report)),
        ("Baseline", baseline_text),
        ("Schema", str(report.get("schema", "?"))),
    ]
    return _html.header(f"Robustness report: {model.get('name', '?')}", rows)


def _summary(report: Mapping[str, Any]) -> str:
    clean = report.get("clean") or {}
    calibration, groups = clean.get("calibration"), report.get("subgroups")
    no_base = "n/a (no baseline)"
    rows = [
        ("Clean error", est(clean.get("error")), ""),
        ("mCE", est(report.get("mce"), no_base), str(report.get("mce_baseline") or "")),
        ("Relative mCE", est(report.get("relative_mce"), no_base), ""),
        ("Mean flip rate", pct(report.get("mean_flip_rate"), "n/a (not run)"), ""),
        ("Shift consistency", est(report.get("shift_consistency"), "n/a (not run)"), ""),
    ]
    if calibration:
        notes = [
            f"{key} {finite_or_none(calibration.get(key.lower())):.3g}"
            for key in ("NLL", "Brier", "Temperature")
            if finite_or_none(calibration.get(key.lower())) is not None
        ]
        rows.append(("ECE", est(calibration.get("ece")), ", ".join(notes)))
    else:
        rows.append(("ECE", "n/a (calibration off)", ""))
    if groups:
        rows.append(
            (
                "Worst-group accuracy",
                est(groups.get("worst_accuracy")),
                f"group {groups.get('worst_group')}, spread {pct(groups.get('spread'))}",
            )
        )
    else:
        rows.append(("Worst-group accuracy", "n/a (no groups)", ""))
    head = ("Metric", "Value", "Notes")
    level = finite_or_none(_html.mapping(clean.get("error")).get("confidence"))
    intervals = "bootstrap intervals" if level is None else f"{100 * level:g} % bootstrap intervals"
    return f"<h2>Summary ({intervals})</h2>" + table(head, rows, range(1, 2))


def _corruption_table(corruptions: Mapping[str, Any]) -> str:
    if not corruptions:
        return ""
    severities = sorted({int(s) for c in corruptions.values() for s in (c or {}).get("errors", {})})
    rows = []
    for name, raw in corruptions.items():
        entry = raw or {}
        errors, base = entry.get("errors") or {}, entry.get("baseline_errors") or {}
        cells = [
            est(errors.get(str(s)), "-")
            + (f" (baseline {pct(base[str(s)])})" if str(s) in base else "")
            for s in severities
        ]
        rows.append(
            [
                str(name),
                str(entry.get("family", "?")),
                "yes" if entry.get("extra") else "no",
                *cells,
                est(entry.get("mean_error")),
                pct(entry.get("ce"), "-"),
                pct(entry.get("relative_ce"), "-"),
            ]
        )
    head = [
        "Corruption",
        "Family",
        "Extra",
        *(f"Severity {s}" for s in severities),
        "Mean error",
        "CE",
        "Relative CE",
    ]
    return "<h2>Errors per corruption</h2>" + table(head, rows, range(3, len(head)))


def _attack_table(attacks: Sequence[Any]) -> str:
    items = [a for a in attacks if isinstance(a, Mapping)]
    if not items:
        return ""

    def plain(x: Any) -> str:
        return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)

    rows = [
        [
            str(a.get("kind", "?")),
            str(a.get("norm", "?")),
            plain(a.get("epsilon")),
            plain(a.get("queries")),
            pct(a.get("clean_accuracy"), "-"),
            est(a.get("robust_accuracy"), "-"),
            pct(a.get("success_rate"), "-"),
            plain(a.get("median_queries")),
            plain(a.get("mean_queries")),
            plain(a.get("score_calls")),
        ]
        for a in items
    ]
    head = [
        "Attack",
        "Norm",
        "Epsilon",
        "Queries",
        "Clean accuracy",
        "Robust accuracy",
        "Success rate",
        "Median queries",
        "Mean queries",
        "Score calls",
    ]
    return "<h2>Attack results</h2>" + table(head, rows, range(2, len(head)))


def render_html(report: Mapping[str, Any]) -> str:
    """Render a robustness report as one self-contained HTML page.

    Args:
        report: The report document (``json.loads`` of the job's report), schema
            "assay.robustness.report/v1", optionally with an ``"attacks"`` list.

    Returns:
        The HTML text: header, summary table, figures and per-corruption (and
        per-attack) tables, with every figure embedded as a base64 PNG.

    Raises:
        MissingPlotsError: A RuntimeError, if matplotlib (the ``report`` extra) is missing.
    """
    title = f"Robustness report: {(report.get('model') or {}).get('name', '?')}"
    figures = _html.plots("robustness").render_all(report)
    body = (
        _header(report)
        + _summary(report)
        + _html.figures(figures)
        + _corruption_table(report.get("corruptions") or {})
        + _attack_table(report.get("attacks") or [])
    )
    return _html.page(title, body)


def write_html(report: Mapping[str, Any], path: Path) -> Path:
    """Write `render_html(report)` as UTF-8 to `path` (its folder must exist); return the path."""
    return _html.write_page(render_html(report), path)
