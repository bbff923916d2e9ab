"""Reading an AI-generated-image detector evaluation report: what its page and figures share.

Where the decision threshold came from, which decision rules to show, one
colour per generator and the robustness points in drawing order; used by
`assay.client.aigen_report_html` and its figures in `assay.client._plots_aigen`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from assay.client._html import finite_or_none, items, mapping

TRANSFORMS = (
    ("jpeg", "JPEG quality", "none"),
    ("resize", "down-scale factor", "1 (none)"),
)
"""(robustness key, what its param is, label of the clean point drawn first)."""


def generators(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-generator entries of the report."""
    return items(report.get("generators"))


def colors(report: Mapping[str, Any]) -> dict[str, str]:
    """One matplotlib colour per generator name, the same in every figure."""
    names = [str(g.get("name")) for g in generators(report)]
    curves = mapping(mapping(report.get("curves")).get("by_generator"))
    generated = mapping(mapping(report.get("histogram")).get("generated"))
    spectra = mapping(mapping(report.get("spectra")).get("by_group"))
    names += [str(n) for n in (*curves, *generated, *spectra) if n != "real"]
    return {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(names))}


def threshold(report: Mapping[str, Any]) -> float | None:
    """The decision threshold of the calibration, None where not reported."""
    return finite_or_none(mapping(report.get("calibration")).get("threshold"))


def uncalibrated(report: Mapping[str, Any]) -> bool:
    """Whether no detector profile was fitted (the raw 0.5 rule decided)."""
    return mapping(report.get("calibration")).get("source") == "default"


def at(report: Mapping[str, Any]) -> str:
    """The decision threshold as a label: "0.73"; "0.5" where no profile was fitted."""
    limit = threshold(report)
    if uncalibrated(report):
        return "0.5"
    return "the threshold" if limit is None else f"{limit:.3g}"


def rules(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, key suffix) per decision rule shown; without a profile both are the 0.5 rule."""
    if uncalibrated(report):
        return [("0.5", "at_0_5")]
    return [(at(report), "calibrated"), ("0.5", "at_0_5")]


def confidence(report: Mapping[str, Any]) -> str:
    """The intervals' confidence as "95 %"."""
    value = finite_or_none(mapping(report.get("settings")).get("confidence"))
    return f"{100 * (value or 0.95):g} %"


def robustness(report: Mapping[str, Any], kind: str, clean: str) -> list[tuple[str, Any]]:
    """(label, entry) per setting, mildest first, the clean point (overall metrics) first."""
    entries = [
        (p, r)
        for r in items(mapping(report.get("robustness")).get(kind))
        if (p := finite_or_none(r.get("param"))) is not None
    ]
    if not entries:
        return []
    entries.sort(key=lambda pr: -pr[0])
    return [(clean, report.get("overall")), *((f"{p:g}", r) for p, r in entries)]
