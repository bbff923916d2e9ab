"""The HTML report of an AI-generated-image detector evaluation: content, escaping, robustness."""

from __future__ import annotations

import base64
import copy
import io
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from PIL import Image

from assay.client.aigen_report_html import UNCALIBRATED, render_aigen_html, write_aigen_html

EVIL = "<script>alert(1)</script> $x$"
IMG = '<img src="data:image/png;base64,'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr"}
FULL_FIGURES = 5  # generator bars, ROC+PR, histogram, robustness grid, spectra


def E(value: float | None, width: float = 0.03) -> dict[str, Any]:
    """An estimate; a null value has null bounds (an undefined metric)."""
    if value is None:
        return {"value": None, "low": None, "high": None, "confidence": 0.95}
    low, high = max(0.0, value - width), min(1.0, value + width)
    return {"value": value, "low": low, "high": high, "confidence": 0.95}


def curves(real: np.ndarray, fake: np.ndarray) -> dict[str, Any]:
    """ROC and PR points of `fake` (positive) against `real`, at every score as threshold."""
    thresholds = np.unique(np.r_[real, fake])[::-1]
    tp = np.array([(fake >= t).sum() for t in thresholds], dtype=float)
    fp = np.array([(real >= t).sum() for t in thresholds], dtype=float)
    return {
        "roc": {"fpr": [0.0, *(fp / real.size)], "tpr": [0.0, *(tp / fake.size)]},
        "pr": {"recall": [0.0, *(tp / fake.size)], "precision": [1.0, *(tp / (tp + fp))]},
    }


def full_report(gen_b: str = "gen_b", source: str = "profile") -> dict[str, Any]:
    rng = np.random.default_rng(0)
    real = rng.beta(2, 6, 60)
    fakes = {"gen_a": rng.beta(8, 2, 60), gen_b: rng.beta(3, 4, 60)}
    edges = np.linspace(0.0, 1.0, 21)
    threshold = 0.73 if source == "profile" else 0.5
    ap = {"gen_a": 0.991, gen_b: 0.614}
    generators = [
        {
            "name": name,
            "count": 60,
            "ap": E(ap[name]),
            "auroc": E(ap[name] - 0.01),
            "accuracy_calibrated": E(float((s >= threshold).mean())),
            "accuracy_at_0_5": E(float((s >= 0.5).mean())),
        }
        for name, s in fakes.items()
    ]
    freq = np.linspace(0.0, 0.5, 32)
    power = -2.0 * freq
    return {
        "schema": "assay.aigen.evaluation/v1",
        "created_at": 1764380000.0,
        "detector": {
            "name": "aigen_demo",
            "version": "1",
            "policy": "crops",
            "max_crops": 16,
            "aggregation": "top_k_mean",
            "top_k": 3,
        },
        "dataset": "/data/eval.jsonl",
        "settings": {"seed": 0, "bootstrap_resamples": 1000, "confidence": 0.95},
        "calibration": {
            "source": source,
            "threshold": threshold,
            "target_fpr": 0.05 if source == "profile" else None,
            "note": "threshold fitted at 5% FPR on 48 real images"
            if source == "profile"
            else "no detector profile: the raw 0.5 rule is used",
        },
        "counts": {"real": 60, "generated": 120},
        "overall": {
            "ap": E(0.912),
            "auroc": E(0.905),
            "accuracy_calibrated": E(0.781),
            "accuracy_at_0_5": E(0.702),
            "real_accuracy_calibrated": E(0.95),
            "generated_accuracy_calibrated": E(0.696),
            "real_accuracy_at_0_5": E(0.9),
            "generated_accuracy_at_0_5": E(0.603),
        },
        "generators": generators,
        "curves": {
            **curves(real, np.r_[fakes["gen_a"], fakes[gen_b]]),
            "by_generator": {name: curves(real, s) for name, s in fakes.items()},
        },
        "histogram": {
            "edges": edges.tolist(),
            "real": np.histogram(real, edges)[0].tolist(),
            "generated": {name: np.histogram(s, edges)[0].tolist() for name, s in fakes.items()},
        },
        "robustness": {
            "jpeg": [
                {"param": q, "ap": E(a), "auroc": E(a), "accuracy_calibrated": E(a - 0.1)}
                for q, a in [(95, 0.88), (85, 0.81), (75, 0.74), (65, 0.69), (50, 0.61)]
            ],
            "resize": [
                {"param": f, "ap": E(a), "auroc": E(a), "accuracy_calibrated": E(None)}
                for f, a in [(0.75, 0.83), (0.5, 0.7), (0.25, 0.55)]
            ],
        },
        "spectra": {
            "n_bins": 32,
            "crop": 64,
            "frequency": freq.tolist(),
            "by_group": {
                "real": power.tolist(),
                "gen_a": (power + 0.8 * freq**2).tolist(),
                gen_b: (power + 0.1).tolist(),
            },
        },
        "examples": [
            {
                "path": f"eval/{gen_b}/0003.png",
                "group": gen_b,
                "label": "generated",
                "probability": 0.0412,
                "correct": False,
            },
            {
                "path": "eval/real/0017.png",
                "group": "real",
                "label": "real",
                "probability": 0.9876,
                "correct": False,
            },
        ],
        "warnings": ["only 60 real images: intervals are wide & <rough>"],
    }


def minimal_report() -> dict[str, Any]:
    report = full_report()
    return {k: report[k] for k in ("schema", "detector", "counts", "overall")}


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


def well_formed(page: str) -> list[str]:
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [] and checker.tags[0] == "html"
    assert not re.search(r"https?://|<script|javascript:|<link", page, re.IGNORECASE)
    return checker.tags


@pytest.fixture(scope="module")
def page() -> str:
    return render_aigen_html(full_report())


@pytest.fixture(scope="module")
def default_page() -> str:
    """No detector profile, and a hostile name for the second generator."""
    return render_aigen_html(full_report(gen_b=EVIL, source="default"))


def test_full_report_is_self_contained_with_one_png_per_figure(page: str) -> None:
    tags = well_formed(page)
    assert page.count(IMG) == page.count("data:image/png;base64,") == FULL_FIGURES
    assert tags.count("img") == tags.count("figure") == FULL_FIGURES
    assert 'http-equiv="Content-Security-Policy"' in page
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(raw)) as image:
            assert image.width >= 500 and image.height >= 300


def test_header_names_detector_policy_dataset_counts_and_time(page: str) -> None:
    assert "<h1>AI-generated image detector evaluation: aigen_demo</h1>" in page
    assert "aigen_demo version 1" in page
    assert "crops: up to 16 native-resolution crops, mean of top 3" in page
    assert "/data/eval.jsonl" in page
    assert "60 real, 120 generated (gen_a 60, gen_b 60)" in page
    assert "2025-11-29 01:33:20 UTC" in page
    assert "1000 bootstrap resamples, seed 0, 95% intervals, all images" in page


def test_summary_and_generator_tables_print_estimates_with_intervals(page: str) -> None:
    assert '<td class="n">91.2% [88.2%, 94.2%]</td>' in page  # overall AP
    assert "<td>Accuracy at 0.73</td>" in page and "<td>Accuracy at 0.5</td>" in page
    assert '<td class="n">78.1% [75.1%, 81.1%]</td>' in page
    assert "<th>Value [95 % CI]</th>" in page and "<th>Detected at 0.73</th>" in page
    assert "Generated accuracy at 0.5" in page and "60.3% [57.3%, 63.3%]" in page
    section = page[page.index("<h2>Per generator</h2>") :]
    assert "<td>gen_a</td>" in section and "<td>gen_b</td>" in section
    assert '<td class="n">61.4% [58.4%, 64.4%]</td>' in section  # AP of gen_b
    assert "Highest AP gen_a (99.1%), lowest gen_b (61.4%): a gap of 37.7 points" in section


def test_figure_sections_robustness_examples_and_warnings(page: str) -> None:
    for heading in (
        "ROC and precision-recall curves",
        "Score histogram",
        "Robustness",
        "Mean power spectra",
        "Most confident mistakes",
        "Warnings",
    ):
        assert f"<h2>{heading}</h2>" in page
    # the clean point first, then each setting; a null estimate prints "-"
    assert re.search(r"<td>JPEG quality</td><td>none</td><td class=\"n\">91.2%", page)
    assert "<td>JPEG quality</td><td>50</td>" in page
    assert "<td>down-scale factor</td><td>0.25</td>" in page
    assert '<td class="n">-</td>' in page
    assert "<td>eval/gen_b/0003.png</td>" in page and '<td class="n">0.041</td>' in page
    assert "<td>mistake</td>" in page
    assert "noise residual (64 px tiles)" in page
    assert "<li>only 60 real images: intervals are wide &amp; &lt;rough&gt;</li>" in page


def test_default_threshold_is_a_warning_and_profile_threshold_is_not(
    page: str, default_page: str
) -> None:
    assert UNCALIBRATED not in page and 'role="alert"' not in page
    assert "threshold 0.73; target FPR 5%; source profile" in page
    default = default_page
    assert default.count(UNCALIBRATED) == 1 and 'role="alert"' in default
    assert "no detector profile: the raw 0.5 rule is used" in default
    # without a profile the calibrated columns would repeat the 0.5 ones: only 0.5 is shown
    assert default.count("<td>Accuracy at 0.5</td>") == 1 and "Accuracy at 0.73" not in default
    assert "<th>Detected at 0.5</th>" in default and "Detected at 0.73" not in default
    assert default.index(UNCALIBRATED) < default.index("<h2>Summary</h2>")


def test_hostile_generator_name_is_escaped(default_page: str) -> None:
    page = default_page
    well_formed(page)
    assert "<script>" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; $x$"
    assert f"<td>{escaped}</td>" in page
    assert f"lowest {escaped} (61.4%)" in page
    assert page.count(IMG) == FULL_FIGURES


def test_minimal_report_renders_without_figures_or_optional_sections() -> None:
    page = render_aigen_html(minimal_report())
    tags = well_formed(page)
    assert "img" not in tags and "figure" not in tags
    assert "aigen_demo" in page and "Calibration: not reported." in page
    assert "91.2% [88.2%, 94.2%]" in page
    for heading in ("Per generator", "Robustness", "Warnings", "Most confident mistakes"):
        assert f"<h2>{heading}</h2>" not in page


def test_nulls_and_broken_sections_are_skipped_not_fatal() -> None:
    report = copy.deepcopy(full_report())
    report.update(spectra=None, examples=None, warnings=None, created_at=None, settings=None)
    report["overall"]["ap"] = E(None)
    report["curves"] = {"roc": {"fpr": [0.0, 1.0], "tpr": [0.0]}, "by_generator": None}
    report["histogram"]["edges"] = [0.0, 1.0]
    report["generators"][1] = {"name": "gen_b", "count": None, "ap": None}
    del report["robustness"]["jpeg"]
    page = render_aigen_html(report)
    well_formed(page)
    assert page.count(IMG) == 2  # generator bars and the resize robustness grid
    assert "<h2>Robustness</h2>" in page and "JPEG quality" not in page
    assert "Mean power spectra" not in page and "Score histogram" not in page
    assert '<td class="n">not computed</td>' in page
    empty = render_aigen_html({})
    well_formed(empty)
    assert IMG not in empty and "evaluation: ?" in empty


def test_write_aigen_html_writes_the_page(tmp_path: Path) -> None:
    report = minimal_report()
    path = write_aigen_html(report, tmp_path / "aigen.html")
    assert path == tmp_path / "aigen.html"
    assert path.read_text(encoding="utf-8") == render_aigen_html(report)
