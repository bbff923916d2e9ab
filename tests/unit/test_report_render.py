"""One entry point for every report page: dispatch by schema, the anomaly page, the CLI's writer."""

from __future__ import annotations

import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import assay.client
from assay.client import _cli_common, _html
from assay.client._evaluate_cli import summary_table
from assay.client.aigen_report_html import render_aigen_html
from assay.client.anomaly_report_html import MAX_IMAGES, render_anomaly_html, write_anomaly_html
from assay.client.ood_report_html import render_ood_html
from assay.client.report_html import render_html

pytest.importorskip("matplotlib")

from tests.unit import test_aigen_report_html as aigen_cases
from tests.unit import test_ood_report_html as ood_cases
from tests.unit import test_report_html as robustness_cases

EVIL = "<script>alert(1)</script>"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr"}


def anomaly_report(with_masks: bool = True) -> dict[str, Any]:
    """A report as the "anomaly_evaluation" job writes it (bare floats; null without masks)."""
    aupimo = {f"{i:03d}.png": (i % 7) / 7 for i in range(45)} | {f"{EVIL}.png": 0.125}
    return {
        "schema": "assay.anomaly.evaluation/v1",
        "model": {"name": "tiles & co", "version": "2"},
        "dataset": {"source": "/data/tiles", "good": 20, "defect": {"crack": 25, "hole": 21}},
        "image_auroc": 0.9375,
        "pixel_auroc": 0.8125 if with_masks else None,
        "aupro": 0.5 if with_masks else None,
        "aupimo": aupimo if with_masks else None,
    }


def tags_of(page: str) -> list[str]:
    """The start tags of a page, after checking that every element is closed in order."""
    tags: list[str] = []
    stack: list[str] = []

    class Checker(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)
            if tag not in VOID:
                stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert stack and stack[-1] == tag, f"</{tag}> closes {stack[-1:]}"
            stack.pop()

    Checker().feed(page)
    assert stack == [] and tags[0] == "html"
    return tags


def hide_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make matplotlib, and the figure modules already imported, look uninstalled."""
    for name in [m for m in sys.modules if m.partition(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for module in [m for m in sys.modules if m.startswith("assay.client._plots")]:
        monkeypatch.delitem(sys.modules, module)
        monkeypatch.delattr(assay.client, module.rpartition(".")[2], raising=False)


@pytest.mark.parametrize(
    ("report", "page"),
    [
        (robustness_cases.minimal_report(), render_html),
        (ood_cases.clean_report(), render_ood_html),
        (aigen_cases.minimal_report(), render_aigen_html),
        (anomaly_report(), render_anomaly_html),
    ],
    ids=["robustness", "ood", "aigen", "anomaly"],
)
def test_render_picks_the_page_by_schema(report: dict[str, Any], page: Any) -> None:
    assert report["schema"] in _html.PAGES
    assert _html.render(report) == page(report)


def test_every_report_schema_the_server_writes_has_a_page() -> None:
    from assay.server.aigen.evaluate_job import SCHEMA as AIGEN
    from assay.server.ood.anomaly_job import SCHEMA as ANOMALY
    from assay.server.ood.evaluate_job import SCHEMA as OOD
    from assay.server.robustness.report import SCHEMA as ROBUSTNESS

    assert set(_html.PAGES) == {ROBUSTNESS, OOD, AIGEN, ANOMALY}


@pytest.mark.parametrize("report", [{}, {"schema": "assay.robustness.report/v2"}, {"schema": 1}])
def test_a_report_without_a_known_schema_is_refused(report: dict[str, Any]) -> None:
    with pytest.raises(_html.UnknownSchemaError, match="no HTML page for report schema"):
        _html.render(report)


def test_anomaly_page_shows_metrics_and_the_worst_images_escaped() -> None:
    page = render_anomaly_html(anomaly_report())
    tags = tags_of(page)
    assert "img" not in tags and EVIL not in page
    assert "<h1>Anomaly detection evaluation: tiles &amp; co</h1>" in page
    assert "20 good, 46 defective (crack 25, hole 21)" in page
    assert '<td class="n">93.8%</td>' in page and '<td class="n">81.2%</td>' in page
    assert '<td class="n">50.0%</td>' in page
    mean = (sum((i % 7) / 7 for i in range(45)) + 0.125) / 46
    assert f'<td class="n">{mean:.1%}</td>' in page
    rows = page.split("AUPIMO per defective image")[1]
    assert rows.count("<tr><td>") == MAX_IMAGES and f"{46 - MAX_IMAGES} more not listed" in rows
    first = rows.index("<td>000.png</td>")  # 0.0: the lowest, listed first
    assert first < rows.index("&lt;script&gt;alert(1)&lt;/script&gt;.png") < rows.index("001.png")


def test_anomaly_page_without_masks_says_so_and_needs_no_matplotlib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide_matplotlib(monkeypatch)
    report = anomaly_report(with_masks=False)
    path = write_anomaly_html(report, tmp_path / "anomaly.html")
    page = path.read_text(encoding="utf-8")
    assert page == _html.render(report) and "AUPIMO per defective image" not in page
    assert page.count("not computed (no ground-truth masks)") == 3


def test_write_report_falls_back_to_json_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide_matplotlib(monkeypatch)
    stderr = io.StringIO()
    monkeypatch.setattr(_cli_common, "err_console", Console(file=stderr, width=200))
    report = robustness_cases.minimal_report()
    with pytest.raises(_html.MissingPlotsError, match=r"pip install 'assay\[report\]'"):
        _html.render(report)
    written = _cli_common.write_report(report, tmp_path / "r.html")
    assert written == tmp_path / "r.json" and not (tmp_path / "r.html").exists()
    assert json.loads(written.read_text()) == report
    assert "pip install 'assay[report]'; writing JSON instead" in stderr.getvalue()
    anomaly = _cli_common.write_report(anomaly_report(), tmp_path / "a.html")
    assert anomaly == tmp_path / "a.html"  # no figures: the page needs no matplotlib
    unknown = _cli_common.write_report({"schema": "x/v9"}, tmp_path / "x.html")
    assert unknown == tmp_path / "x.json" and _cli_common.write_report({}, None) is None


def test_tables_fold_long_cells_instead_of_cutting_them() -> None:
    table = _cli_common.table("t", ("a", "b", "n"), right=("n",))
    table.add_row("x" * 60, "long words " * 8, "9" * 30)
    out = io.StringIO()
    Console(file=out, width=40).print(table)
    text = out.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 40
    assert text.count("x") == 60 and text.count("9") == 30 and text.count("words") == 8


def at_confidence(node: Any, level: float | None) -> Any:
    """A copy of a report with every estimate's recorded confidence set to `level`."""
    if isinstance(node, dict):
        return {k: level if k == "confidence" else at_confidence(v, level) for k, v in node.items()}
    if isinstance(node, list):
        return [at_confidence(v, level) for v in node]
    return node


def test_summaries_name_the_confidence_the_report_records() -> None:
    report = robustness_cases.full_report()
    assert report["clean"]["error"]["confidence"] == 0.95
    for level, header, heading in [
        (0.95, "value [95% CI]", "Summary (95 % bootstrap intervals)"),
        (0.9, "value [90% CI]", "Summary (90 % bootstrap intervals)"),
        (0.975, "value [97.5% CI]", "Summary (97.5 % bootstrap intervals)"),
        (None, "value [CI]", "Summary (bootstrap intervals)"),
    ]:
        recorded = at_confidence(report, level)
        table = summary_table(recorded)
        assert [c.header for c in table.columns] == ["metric", header]
        assert heading in render_html(recorded)
