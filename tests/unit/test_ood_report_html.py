"""The HTML OOD evaluation report: self-contained, well-formed, escaped, one PNG per plot."""

from __future__ import annotations

import base64
import io
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from PIL import Image

import assay.client
from assay.client import ood_report_html
from assay.client.ood_report_html import render_ood_html, write_ood_html

EVIL_SCORER = "<script>alert(1)</script> $k$"
EVIL_SET = 'a&b <i>"ood"'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG = '<img src="data:image/png;base64,'
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr"}
WARNING_BOX = '<div class="warn"'


def E(value: float, interval: bool = True) -> dict[str, Any]:
    """An estimate; without an interval its bounds are null (as for a degenerate bootstrap)."""
    low, high = (max(0.0, value - 0.02), min(1.0, value + 0.02)) if interval else (None, None)
    return {"value": value, "low": low, "high": high, "confidence": 0.95}


def result(separation: float, seed: int, n_in: int = 400, n_out: int = 300) -> dict[str, Any]:
    """One scorer on one OOD set: scores drawn as two normals `separation` apart."""
    rng = np.random.default_rng(seed)
    inside, outside = rng.normal(0.0, 1.0, n_in), rng.normal(separation, 1.2, n_out)
    auroc = float((outside[:, None] > inside[None, :]).mean())
    thresholds = np.unique(np.quantile(np.r_[inside, outside], np.linspace(0, 1, 100)))[::-1]
    fpr = [float((inside >= t).mean()) for t in thresholds]
    tpr = [float((outside >= t).mean()) for t in thresholds]
    edges = np.histogram_bin_edges(np.r_[inside, outside], bins=30)
    fpr95 = float((outside <= np.quantile(inside, 0.95)).mean())
    return {
        "auroc": E(auroc),
        "aupr_in": E(min(1.0, auroc + 0.01)),
        "aupr_out": E(max(0.0, auroc - 0.03), interval=False),
        "fpr_at_tpr": E(fpr95),
        "detection_accuracy": E(0.5 + (auroc - 0.5) * 0.8),
        "tpr": 0.95,
        "n_in": n_in,
        "n_out": n_out,
        "roc": {"fpr": [0.0, *fpr, 1.0], "tpr": [0.0, *tpr, 1.0]},
        "histogram": {
            "edges": edges.tolist(),
            "in": np.histogram(inside, edges)[0].tolist(),
            "out": np.histogram(outside, edges)[0].tolist(),
        },
    }


def build_report(separations: dict[str, dict[str, float]]) -> dict[str, Any]:
    """A report as the job builds it: `separations[scorer][set]` drives each result."""
    results = {
        scorer: {name: result(sep, seed=17 * i + j) for j, (name, sep) in enumerate(per.items())}
        for i, (scorer, per) in enumerate(separations.items())
    }
    means = {
        scorer: (
            float(np.mean([r["auroc"]["value"] for r in per.values()])),
            float(np.mean([r["fpr_at_tpr"]["value"] for r in per.values()])),
        )
        for scorer, per in results.items()
    }
    ranking = sorted(means, key=lambda s: (-means[s][0], means[s][1], s))
    sets = next(iter(separations.values()))
    return {
        "schema": "assay.ood.evaluation/v1",
        "model": {"name": "digits_cnn", "version": "2"},
        "in_dataset": {"source": "/data/digits/test", "images": 400},
        "ood_datasets": {name: {"source": f"/data/{name}/ood", "images": 300} for name in sets},
        "results": results,
        "ranking": [
            {"scorer": s, "mean_auroc": means[s][0], "mean_fpr_at_tpr": means[s][1]}
            for s in ranking
        ],
        "recommended": ranking[0],
        "contamination": {},
    }


def full_report() -> dict[str, Any]:
    report = build_report(
        {
            "msp": {"letters": 1.2, EVIL_SET: 0.8},
            "energy": {"letters": 2.5, EVIL_SET: 1.9},
            EVIL_SCORER: {"letters": 1.8, EVIL_SET: 1.1},
        }
    )
    offenders = [
        {"index": 41, "class_name": "seven", "confidence": 0.998},
        {"index": 7, "class_name": "one <b>", "confidence": 0.991},
        {"index": 250, "class_name": "zero", "confidence": 0.962},
    ]
    report["contamination"] = {
        EVIL_SET: {
            "count": 27,
            "total": 300,
            "threshold": 0.9,
            "offenders": offenders,
            "message": "27 of 300 OOD samples (9.0%) are classified as ...",
        }
    }
    return report


def clean_report() -> dict[str, Any]:
    return build_report({"maxlogit": {"noise": 3.0}, "vim": {"noise": 2.2}})


def many_scorers_report() -> dict[str, Any]:
    return build_report({f"s{i}": {"noise": 0.5 * i} for i in range(4)})


def report_without_plot_data() -> dict[str, Any]:
    report = clean_report()
    for per in report["results"].values():
        for entry in per.values():
            del entry["roc"]
            entry["histogram"] = {"edges": [0.0, 1.0], "in": [0], "out": []}
    return report


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


CASES = {"full": (full_report, 4), "clean": (clean_report, 2)}


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {name: render_ood_html(build()) for name, (build, _) in CASES.items()}


@pytest.mark.parametrize("case", CASES)
def test_page_is_well_formed_self_contained_and_has_one_png_per_plot(
    case: str, rendered: dict[str, str]
) -> None:
    page = rendered[case]
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [] and checker.tags[0] == "html"
    assert {"head", "title", "style", "body", "h1", "table", "figure"} <= set(checker.tags)
    assert 'http-equiv="Content-Security-Policy"' in page
    expected = CASES[case][1]  # a ROC figure and a histogram figure per OOD set
    assert page.count(IMG) == page.count("data:image/png;base64,") == expected
    assert checker.tags.count("img") == expected
    assert not re.search(r"https?://|<script|javascript:|<link", page, re.IGNORECASE)
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            assert image.width >= 400 and image.height >= 300


def test_hostile_names_are_escaped(rendered: dict[str, str]) -> None:
    page = rendered["full"]
    assert "<script>" not in page and "<i>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; $k$" in page
    assert "a&amp;b &lt;i&gt;&quot;ood&quot;" in page
    assert "one &lt;b&gt;" in page
    assert f"<h2>OOD set {'a&amp;b &lt;i&gt;&quot;ood&quot;'}</h2>" in page


def test_ranking_and_metrics_tables_highlight_the_recommended_scorer(
    rendered: dict[str, str],
) -> None:
    page = rendered["full"]
    assert full_report()["recommended"] == "energy"
    # The ranking row and one metrics row per OOD set: 3 highlighted rows, all for energy.
    highlighted = re.findall(r'<tr class="recommended">(.*?)</tr>', page)
    assert len(highlighted) == 3
    assert highlighted[0].startswith("<td>1</td><td>energy (recommended)</td>")
    assert all("energy (recommended)" in row for row in highlighted)
    assert page.count("(recommended)") == 3
    assert "Mean FPR@95TPR" in page and "Detection accuracy" in page and "AUPR-Out" in page
    cells = re.findall(r'<td class="n">([^<]*)</td>', page.split("<h2>OOD set letters</h2>")[1])
    # Per scorer: AUROC, AUPR-In with intervals, AUPR-Out without (null bounds), FPR, accuracy.
    assert re.fullmatch(r"\d+\.\d% \[\d+\.\d%, \d+\.\d%\]", cells[0])
    assert re.fullmatch(r"\d+\.\d%", cells[2])
    assert "scored: 400 in-distribution vs 300 OOD images" in page


def test_contamination_warning_lists_the_worst_offenders(rendered: dict[str, str]) -> None:
    page = rendered["full"]
    assert page.count(WARNING_BOX) == 1
    box = page[page.index(WARNING_BOX) : page.index("</div>")]
    assert "27 of 300 images (9.0%)" in box and "≥ 0.9" in box
    for text in ("<td>seven</td>", "0.998", '<td class="n">0.962</td>', "<td>41</td>"):
        assert text in box
    assert "OOD set letters" not in box  # only the flagged set
    assert page.count("Possibly contaminated: see the warning above.") == 1
    assert page.index(WARNING_BOX) < page.index("Ranking of the scorers")


def test_report_without_contamination_has_no_warning_box(rendered: dict[str, str]) -> None:
    page = rendered["clean"]
    assert WARNING_BOX not in page and "contaminated" not in page.lower()
    assert "maxlogit (recommended)" in page and "ROC curves: noise" in page


def test_roc_lines_and_histogram_panels_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ood_report_html, "MAX_ROC_LINES", 3)
    monkeypatch.setattr(ood_report_html, "MAX_PANELS", 2)
    page = render_ood_html(many_scorers_report())
    assert "ROC curves: noise" in page and "1 more scorers not shown" in page
    assert "Score histograms: noise" in page and "2 more scorers not shown" in page
    assert page.count(IMG) == 2 and "s3 (recommended)" in page


def test_write_ood_html_writes_the_page_and_skips_missing_plot_data(tmp_path: Path) -> None:
    report = report_without_plot_data()
    path = write_ood_html(report, tmp_path / "ood.html")
    assert path == tmp_path / "ood.html"
    page = path.read_text(encoding="utf-8")
    assert page == render_ood_html(report)
    assert IMG not in page and "<figure>" not in page
    assert "maxlogit (recommended)" in page and "<h2>OOD set noise</h2>" in page


def test_missing_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)
    for module in [m for m in sys.modules if m.startswith("assay.client._plots")]:
        monkeypatch.delitem(sys.modules, module)
        monkeypatch.delattr(assay.client, module.rpartition(".")[2], raising=False)
    with pytest.raises(RuntimeError, match=r"pip install 'assay\[report\]'"):
        render_ood_html(clean_report())
