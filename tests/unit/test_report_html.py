"""The HTML robustness report: self-contained, well-formed, escaped, one PNG per plot."""

from __future__ import annotations

import base64
import io
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from PIL import Image

import assay.client
from assay.client.report_html import render_html, write_html

EVIL = "<script>alert(1)</script>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG = '<img src="data:image/png;base64,'
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr"}


def E(value: float | None, low: float | None = None, high: float | None = None) -> dict[str, Any]:
    if low is None and high is None and value is not None:
        low, high = max(0.0, value - 0.04), min(1.0, value + 0.04)
    return {"value": value, "low": low, "high": high, "confidence": 0.95}


def corruption(
    family: str,
    extra: bool,
    errors: list[float],
    baseline: list[float] | None,
    severities: list[int],
    ce: float | None = None,
    rce: float | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "family": family,
        "extra": extra,
        "errors": {str(s): E(e) for s, e in zip(severities, errors, strict=True)},
        "mean_error": E(sum(errors) / len(errors)),
        "ce": ce,
        "relative_ce": rce,
    }
    if baseline is not None:
        entry["baseline_errors"] = {str(s): b for s, b in zip(severities, baseline, strict=True)}
    return entry


def calibration() -> dict[str, Any]:
    bins = []
    for i in range(15):
        lower, upper = i / 15, (i + 1) / 15
        empty = i < 4
        bins.append(
            {
                "lower": lower,
                "upper": upper,
                "count": 0 if empty else 3 * i,
                "mean_confidence": None if empty else (lower + upper) / 2,
                "accuracy": None if empty else min(1.0, lower + 0.05),
            }
        )
    return {
        "ece": E(0.07),
        "mce": 0.69,
        "nll": {"value": 0.11, "low": 0.09, "high": 0.13, "confidence": 0.95},
        "brier": {"value": 0.047, "low": 0.04, "high": 0.055, "confidence": 0.95},
        "temperature": 0.594,
        "ece_after_temperature": 0.028,
        "reliability": bins,
    }


def suite(**overrides: Any) -> dict[str, Any]:
    base = {
        "attacks": [],
        "bootstrap_resamples": 500,
        "calibration": True,
        "corruptions": ["gaussian_noise", "defocus_blur", "fog", "speckle_noise"],
        "perturbation_frames": 6,
        "perturbations": ["translate", "gaussian_noise"],
        "sample_limit": 200,
        "seed": 0,
        "severities": [1, 2, 3, 4, 5],
        "shift_consistency": True,
        "subgroups": True,
    }
    return base | overrides


def full_report() -> dict[str, Any]:
    sev = [1, 2, 3, 4, 5]
    return {
        "schema": "assay.robustness.report/v1",
        "model": {"name": EVIL, "version": "3", "backend": "triton"},
        "baseline": {"name": "resnet50 & friends"},
        "dataset": {"source": "/data/<eval>/manifest.jsonl", "images": 200, "classes": 10},
        "suite": suite(),
        "spec": {"model": EVIL, "preset": "standard", "overrides": {"sample_limit": 200}},
        "clean": {"error": E(0.12), "calibration": calibration()},
        "corruptions": {
            "gaussian_noise": corruption(
                "noise",
                False,
                [0.2, 0.3, 0.45, 0.6, 0.75],
                [0.3, 0.45, 0.6, 0.75, 0.9],
                sev,
                0.78,
                0.7,
            ),
            "defocus_blur": corruption(
                "blur",
                False,
                [0.15, 0.2, 0.3, 0.4, 0.5],
                [0.2, 0.3, 0.4, 0.5, 0.6],
                sev,
                0.78,
                0.65,
            ),
            "fog": corruption(
                "weather",
                False,
                [0.14, 0.16, 0.2, 0.25, 0.3],
                [0.15, 0.2, 0.25, 0.3, 0.35],
                sev,
                0.86,
                None,
            ),
            "speckle_noise": corruption(
                "noise",
                True,
                [0.18, 0.25, 0.35, 0.5, 0.6],
                [0.25, 0.35, 0.5, 0.6, 0.7],
                sev,
                0.79,
                0.75,
            ),
        },
        "mce": E(0.80),
        "relative_mce": E(0.70),
        "mce_baseline": "baseline model",
        "perturbations": {
            "translate": {"flip_rate": E(0.05), "compare_to_first": False},
            "gaussian_noise": {"flip_rate": E(0.08, None, None), "compare_to_first": True},
        },
        "mean_flip_rate": 0.065,
        "shift_consistency": E(0.93),
        "subgroups": {
            "accuracy": {"indoor": 0.91, "a&b <i>": 0.84, "$x$ cost": 0.88},
            "counts": {"indoor": 80, "a&b <i>": 60, "$x$ cost": 60},
            "worst_group": "a&b <i>",
            "worst_accuracy": E(0.84),
            "spread": 0.07,
        },
        "attacks": [
            {
                "kind": "square_linf",
                "norm": "linf",
                "epsilon": eps,
                "queries": 500,
                "clean_accuracy": 0.88,
                "robust_accuracy": E(acc),
                "success_rate": rate,
                "median_queries": 40.0,
                "mean_queries": 55.2,
                "score_calls": 480,
            }
            for eps, acc, rate in [(2 / 255, 0.7, 0.2), (4 / 255, 0.5, 0.43), (8 / 255, 0.2, 0.77)]
        ]
        + [
            {
                "kind": "square_l2",
                "norm": "l2",
                "epsilon": 0.5,
                "queries": 500,
                "clean_accuracy": 0.88,
                "robust_accuracy": E(0.6, None, None),
                "success_rate": None,
                "median_queries": None,
                "mean_queries": None,
                "score_calls": 480,
            }
        ],
        "timing": {"clean": 0.08},
    }


def minimal_report() -> dict[str, Any]:
    sev = [1, 3]
    return {
        "schema": "assay.robustness.report/v1",
        "model": {"name": "digits_cnn", "version": "1", "backend": "onnx"},
        "baseline": None,
        "dataset": {"source": "inline", "images": 60, "classes": 10},
        "suite": suite(
            corruptions=["contrast", "fog"],
            severities=sev,
            perturbations=[],
            shift_consistency=False,
            calibration=False,
            subgroups=False,
        ),
        "spec": {"model": "digits_cnn", "preset": "quick", "overrides": {}},
        "clean": {"error": E(0.02, 0.0, 0.05), "calibration": None},
        "corruptions": {
            "contrast": corruption("digital", False, [0.5, 0.8], None, sev),
            "fog": corruption("weather", False, [0.6, 0.85], None, sev),
        },
        "mce": None,
        "relative_mce": None,
        "mce_baseline": None,
        "perturbations": {},
        "mean_flip_rate": None,
        "shift_consistency": None,
        "subgroups": None,
        "timing": {},
    }


def adversarial_report() -> dict[str, Any]:
    report = full_report() | {
        "corruptions": {},
        "mce": None,
        "relative_mce": None,
        "perturbations": {},
        "mean_flip_rate": None,
        "subgroups": None,
    }
    report["model"] = {"name": "m", "version": "", "backend": "onnx"}
    return report


CASES = {
    "full": (full_report, 6),
    "minimal": (minimal_report, 2),
    "adversarial": (adversarial_report, 2),
}


class TagChecker(HTMLParser):
    """Collects start tags and checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {name: render_html(build()) for name, (build, _) in CASES.items()}


@pytest.mark.parametrize("case", CASES)
def test_page_is_well_formed_self_contained_and_has_one_png_per_plot(
    case: str, rendered: dict[str, str]
) -> None:
    page = rendered[case]
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [] and checker.tags[0] == "html"
    assert {"head", "title", "style", "body", "h1", "table"} <= set(checker.tags)
    expected = CASES[case][1]
    assert page.count(IMG) == checker.tags.count("img") == expected
    assert not re.search(r"https?://|<script|javascript:|<link", page, re.IGNORECASE)
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            assert image.width >= 300 and image.height >= 200


def test_report_strings_are_escaped(rendered: dict[str, str]) -> None:
    page = rendered["full"]
    assert EVIL not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "resnet50 &amp; friends" in page and "/data/&lt;eval&gt;/manifest.jsonl" in page
    assert "a&amp;b &lt;i&gt;" in page


def test_summary_and_tables(rendered: dict[str, str]) -> None:
    full, minimal = rendered["full"], rendered["minimal"]
    assert "80.0% [76.0%, 84.0%]" in full and "speckle_noise" in full and "Attack results" in full
    assert "Severity 5" in full and "(baseline 90.0%)" in full
    assert minimal.count("n/a (no baseline)") == 2
    for text in ("n/a (not run)", "n/a (calibration off)", "n/a (no groups)"):
        assert text in minimal
    assert "Attack results" not in minimal and "Severity 3" in minimal


def test_write_html_writes_the_page(tmp_path: Path, rendered: dict[str, str]) -> None:
    path = write_html(minimal_report(), tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    assert path.read_text(encoding="utf-8") == rendered["minimal"]


def test_missing_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)
    for module in [m for m in sys.modules if m.startswith("assay.client._plots")]:
        monkeypatch.delitem(sys.modules, module)
        monkeypatch.delattr(assay.client, module.rpartition(".")[2], raising=False)
    with pytest.raises(RuntimeError, match=r"pip install 'assay\[report\]'"):
        render_html(minimal_report())
