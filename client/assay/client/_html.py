"""The parts every HTML report page shares, and `render`, which picks the page by schema.

A page is self-contained: inline CSS, figures embedded as base64 PNG data URIs,
no JavaScript, nothing fetched (its Content-Security-Policy forbids it too),
every string taken from a report HTML-escaped here. The figures need the
optional matplotlib dependency (``pip install 'assay[report]'``); `plots`
imports a figure module and turns a missing matplotlib into `MissingPlotsError`,
which the CLI answers by writing the JSON instead.

Example:
    >>> write(client.get_report(job.id), Path("report.html"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from types import ModuleType
from typing import Any

MISSING = "HTML reports need matplotlib: pip install 'assay[report]'"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
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
PAGES = {
    "assay.robustness.report/v1": ("assay.client.report_html", "render_html"),
    "assay.ood.evaluation/v1": ("assay.client.ood_report_html", "render_ood_html"),
    "assay.aigen.evaluation/v1": ("assay.client.aigen_report_html", "render_aigen_html"),
    "assay.anomaly.evaluation/v1": ("assay.client.anomaly_report_html", "render_anomaly_html"),
}
"""Report schema -> (module, function) that renders it."""


class MissingPlotsError(RuntimeError):
    """matplotlib (the ``report`` extra) is not installed, so the page cannot be drawn."""


class UnknownSchemaError(ValueError):
    """No page renders the report's schema (a newer server, or not a report)."""


# ------------------------------------------------------------------ dispatch


def render(report: Mapping[str, Any]) -> str:
    """The HTML page of any report, chosen by its ``schema`` field.

    Raises:
        UnknownSchemaError: If no page renders the report's schema.
        MissingPlotsError: If the page needs matplotlib and it is not installed.
    """
    schema = report.get("schema")
    if schema not in PAGES:
        known = ", ".join(sorted(PAGES))
        raise UnknownSchemaError(f"no HTML page for report schema {schema!r} (known: {known})")
    module, function = PAGES[str(schema)]
    page: str = getattr(importlib.import_module(module), function)(report)
    return page


def write(report: Mapping[str, Any], path: Path) -> Path:
    """Render any report (see `render`) and write it as UTF-8 to `path`; return the path."""
    return write_page(render(report), path)


def write_page(page: str, path: Path) -> Path:
    """Write a rendered page as UTF-8 to `path` (its folder must exist); return the path."""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def plots(capability: str) -> ModuleType:
    """The module ``assay.client._plots_<capability>``; MissingPlotsError without matplotlib."""
    try:
        return importlib.import_module(f"assay.client._plots_{capability}")
    except ImportError as exc:  # ModuleNotFoundError, or a broken install
        if (exc.name or "").partition(".")[0] == "matplotlib":
            raise MissingPlotsError(MISSING) from None
        raise


# ------------------------------------------------------------------ report values


def finite_or_none(x: Any) -> float | None:
    """A finite report number, else None."""
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def pct(x: Any, missing: str = "n/a") -> str:
    """A rate as "12.3%", `missing` where it is not a finite number."""
    value = finite_or_none(x)
    return missing if value is None else f"{value:.1%}"


def est(e: Any, missing: str = "n/a") -> str:
    """An estimate E as "12.3% [10.1%, 14.6%]" (the interval only where both bounds exist)."""
    if not isinstance(e, Mapping) or finite_or_none(e.get("value")) is None:
        return pct(e, missing)
    low, high = finite_or_none(e.get("low")), finite_or_none(e.get("high"))
    interval = f" [{low:.1%}, {high:.1%}]" if low is not None and high is not None else ""
    return f"{e['value']:.1%}{interval}"


def value(e: Any) -> float | None:
    """The value of an estimate E (or a bare number), None where missing."""
    return finite_or_none(e.get("value") if isinstance(e, Mapping) else e)


def mapping(x: Any) -> Mapping[str, Any]:
    """`x` where it is a mapping, else an empty one."""
    return x if isinstance(x, Mapping) else {}


def items(x: Any) -> list[Mapping[str, Any]]:
    """The mappings of a report list, [] where it is not a list."""
    return [i for i in x if isinstance(i, Mapping)] if isinstance(x, list | tuple) else []


def floats(values: Any) -> list[float]:
    """A list of finite report numbers, or [] where absent or any item is not one."""
    if not isinstance(values, list | tuple):
        return []
    found = [v for v in map(finite_or_none, values) if v is not None]
    return found if len(found) == len(values) else []


# ------------------------------------------------------------------ HTML parts


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: range,
    marked: Sequence[bool] | None = None,
) -> str:
    """An HTML table, every cell escaped, the `numeric` columns right-aligned.

    The rows flagged in `marked` (where given) get class "recommended".
    """
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = ""
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="n">{escape(c)}</td>' if j in numeric else f"<td>{escape(c)}</td>"
            for j, c in enumerate(row)
        )
        body += (
            f'<tr class="recommended">{cells}</tr>' if marked and marked[i] else f"<tr>{cells}</tr>"
        )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def header(title: str, rows: Iterable[tuple[str, str]]) -> str:
    """The page's heading and its key/value table (model, data, settings, schema)."""
    meta = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<h1>{escape(title)}</h1><table>{meta}</table>"


def figure(caption: str, data: str, alt: str) -> str:
    """One embedded base64 PNG with its caption."""
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def figures(shown: Sequence[tuple[str, str, str]], level: str = "h2") -> str:
    """(heading, caption, base64 PNG) figures, each under its own `level` heading."""
    return "".join(
        f"<{level}>{escape(heading)}</{level}>" + figure(caption, data, heading)
        for heading, caption, data in shown
    )


def page(title: str, body: str, css: str = "") -> str:
    """The whole document: CSP, viewport, title, the shared CSS plus `css`, and `body`."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}{css}</style></head>\n"
        f"<body>{body}</body></html>\n"
    )
