"""A robustness report (schema "assay.robustness.report/v1") as one self-contained HTML page.

The page has inline CSS and its figures embedded as base64 PNG data URIs: no
JavaScript, no external files, nothing fetched (its Content-Security-Policy
forbids it too). Every string taken from the report is HTML-escaped. The
figures need the optional matplotlib dependency (``pip install 'assay[report]'``).

Example:
    >>> write_html(json.loads(report_json), Path("robustness.html"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

__all__ = ["render_html", "write_html"]

_MISSING = "HTML reports need matplotlib: pip install 'assay[report]'"
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1f2328;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}img{max-width:100%;height:auto}
figcaption{color:#59636e;font-size:.85rem}
"""


def _num(x: Any) -> float | None:
    """A finite report number, else None."""
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def _pct(x: Any, missing: str = "n/a") -> str:
    value = _num(x)
    return missing if value is None else f"{value:.1%}"


def _est(e: Any, missing: str = "n/a") -> str:
    """An estimate E as "12.3% [10.1%, 14.6%]" (the interval only where both bounds exist)."""
    if not isinstance(e, Mapping) or _num(e.get("value")) is None:
        return _pct(e, missing)
    low, high = _num(e.get("low")), _num(e.get("high"))
    interval = f" [{low:.1%}, {high:.1%}]" if low is not None and high is not None else ""
    return f"{e['value']:.1%}{interval}"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: range) -> str:
    """An HTML table; every cell is escaped here, the `numeric` columns right-aligned."""
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{escape(c)}</td>' if i in numeric else f"<td>{escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


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
    meta = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<h1>Robustness report: {escape(str(model.get('name', '?')))}</h1><table>{meta}</table>"


def _summary(report: Mapping[str, Any]) -> str:
    clean = report.get("clean") or {}
    calibration, groups = clean.get("calibration"), report.get("subgroups")
    no_base = "n/a (no baseline)"
    rows = [
        ("Clean error", _est(clean.get("error")), ""),
        ("mCE", _est(report.get("mce"), no_base), str(report.get("mce_baseline") or "")),
        ("Relative mCE", _est(report.get("relative_mce"), no_base), ""),
        ("Mean flip rate", _pct(report.get("mean_flip_rate"), "n/a (not run)"), ""),
        ("Shift consistency", _est(report.get("shift_consistency"), "n/a (not run)"), ""),
    ]
    if calibration:
        notes = [
            f"{key} {_num(calibration.get(key.lower())):.3g}"
            for key in ("NLL", "Brier", "Temperature")
            if _num(calibration.get(key.lower())) is not None
        ]
        rows.append(("ECE", _est(calibration.get("ece")), ", ".join(notes)))
    else:
        rows.append(("ECE", "n/a (calibration off)", ""))
    if groups:
        rows.append(
            (
                "Worst-group accuracy",
                _est(groups.get("worst_accuracy")),
                f"group {groups.get('worst_group')}, spread {_pct(groups.get('spread'))}",
            )
        )
    else:
        rows.append(("Worst-group accuracy", "n/a (no groups)", ""))
    head = ("Metric", "Value", "Notes")
    return "<h2>Summary (95 % bootstrap intervals)</h2>" + _table(head, rows, range(1, 2))


def _corruption_table(corruptions: Mapping[str, Any]) -> str:
    if not corruptions:
        return ""
    severities = sorted({int(s) for c in corruptions.values() for s in (c or {}).get("errors", {})})
    rows = []
    for name, raw in corruptions.items():
        entry = raw or {}
        errors, base = entry.get("errors") or {}, entry.get("baseline_errors") or {}
        cells = [
            _est(errors.get(str(s)), "-")
            + (f" (baseline {_pct(base[str(s)])})" if str(s) in base else "")
            for s in severities
        ]
        rows.append(
            [
                str(name),
                str(entry.get("family", "?")),
                "yes" if entry.get("extra") else "no",
                *cells,
                _est(entry.get("mean_error")),
                _pct(entry.get("ce"), "-"),
                _pct(entry.get("relative_ce"), "-"),
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
    return "<h2>Errors per corruption</h2>" + _table(head, rows, range(3, len(head)))


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
            _pct(a.get("clean_accuracy"), "-"),
            _est(a.get("robust_accuracy"), "-"),
            _pct(a.get("success_rate"), "-"),
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
    return "<h2>Attack results</h2>" + _table(head, rows, range(2, len(head)))


def _figures(figures: Sequence[tuple[str, str, str]]) -> str:
    return "".join(
        f"<h2>{escape(heading)}</h2><figure>"
        f'<img src="data:image/png;base64,{data}" alt="{escape(heading)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for heading, caption, data in figures
    )


def render_html(report: Mapping[str, Any]) -> str:
    """Render a robustness report as one self-contained HTML page.

    Args:
        report: The report document (``json.loads`` of the job's report), schema
            "assay.robustness.report/v1", optionally with an ``"attacks"`` list.

    Returns:
        The HTML text: header, summary table, figures and per-corruption (and
        per-attack) tables, with every figure embedded as a base64 PNG.

    Raises:
        RuntimeError: If matplotlib (the ``report`` extra) is not installed.
    """
    try:
        from assay.client import _report_plots
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "matplotlib":
            raise RuntimeError(_MISSING) from None
        raise
    figures = _report_plots.render_all(report)
    title = escape(f"Robustness report: {(report.get('model') or {}).get('name', '?')}")
    body = (
        _header(report)
        + _summary(report)
        + _figures(figures)
        + _corruption_table(report.get("corruptions") or {})
        + _attack_table(report.get("attacks") or [])
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head>\n<body>{body}</body></html>\n"
    )


def write_html(report: Mapping[str, Any], path: Path) -> Path:
    """Render a report (see `render_html`) and write it as UTF-8 to `path`.

    Args:
        report: The report document.
        path: Where to write the page; its folder must exist.

    Returns:
        The path written.

    Raises:
        RuntimeError: If matplotlib (the ``report`` extra) is not installed.
    """
    path = Path(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path
