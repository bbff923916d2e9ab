"""The report's CE/mCE against independent computations on synthetic units."""

from types import SimpleNamespace

import numpy as np
import pytest

from assay.server.robustness import metrics
from assay.server.robustness.corruptions import EXTRAS, IMAGENET_C
from assay.server.robustness.report import UnitData, build_report
from assay.server.robustness.runner import EvaluationInputs
from assay.server.robustness.suite import SuiteSpec


def fake_scorer(name: str, classes: int) -> SimpleNamespace:
    model = SimpleNamespace(
        name=name, config=SimpleNamespace(version="1"),
        backend=SimpleNamespace(metadata=lambda: SimpleNamespace(kind="onnx")),
    )  # fmt: skip
    return SimpleNamespace(
        model=model, labels=tuple(str(i) for i in range(classes)), outputs_probabilities=False
    )


def units_for(
    suite: SuiteSpec, labels: np.ndarray, classes: int, roles: tuple[str, ...], seed: int
) -> dict[str, UnitData]:
    rng = np.random.default_rng(seed)
    n = len(labels)
    units = {}
    logits = {r: rng.normal(size=(n, classes)).astype(np.float32) for r in roles}
    for r in roles:
        logits[r][np.arange(n), labels] += 3.0  # mostly right when clean
    units["clean"] = UnitData({"seconds": 0.1}, {f"{r}/scores": logits[r] for r in roles})
    for c in suite.corruptions:
        for s in suite.severities:
            arrays = {}
            for r in roles:
                wrong = rng.random(n) < 0.1 * s + (0.05 if r == "model" else 0.15)
                arrays[f"{r}/pred"] = np.where(wrong, (labels + 1) % classes, labels).astype(
                    np.int32
                )
                arrays[f"{r}/scores"] = np.zeros((n, 1), np.float32)
            units[f"corruption/{c}/{s}"] = UnitData({"seconds": 0.1}, arrays)
    return units


def curves(
    units: dict[str, UnitData], suite: SuiteSpec, labels: np.ndarray, role: str, names: list[str]
) -> dict[str, list[float]]:
    return {
        c: [
            float((units[f"corruption/{c}/{s}"].arrays[f"{role}/pred"] != labels).mean())
            for s in suite.severities
        ]
        for c in names
    }


def test_imagenet_models_get_mce_against_alexnet_over_the_15_benchmark_corruptions() -> None:
    suite = SuiteSpec(corruptions=IMAGENET_C + EXTRAS, calibration=False, bootstrap_resamples=200)
    labels = np.random.default_rng(0).integers(0, 1000, 80)
    units = units_for(suite, labels, 1000, ("model",), seed=1)
    inputs = EvaluationInputs([np.zeros((2, 2, 3), np.uint8)] * 80, labels)
    report = build_report(
        suite, units, inputs, {"model": fake_scorer("m", 1000)}, source="x", spec={}
    )
    assert report["mce_baseline"].startswith("alexnet") and report["mce_corruptions"] == list(
        IMAGENET_C
    )
    expected = metrics.mean_corruption_error(
        curves(units, suite, labels, "model", list(IMAGENET_C)), metrics.ALEXNET_ERRORS
    )
    assert report["mce"]["value"] == pytest.approx(expected, rel=1e-9)
    assert report["mce"]["low"] <= expected <= report["mce"]["high"]
    assert all(report["corruptions"][c]["ce"] is None for c in EXTRAS)
    assert report["corruptions"]["fog"]["baseline_errors"]["3"] == metrics.ALEXNET_ERRORS["fog"][2]


def test_a_paired_baseline_model_gives_mce_and_relative_mce() -> None:
    suite = SuiteSpec(
        corruptions=("fog", "snow"),
        severities=(1, 2, 3),
        calibration=False,
        bootstrap_resamples=200,
    )
    labels = np.random.default_rng(2).integers(0, 10, 120)
    units = units_for(suite, labels, 10, ("model", "baseline"), seed=3)
    inputs = EvaluationInputs([np.zeros((2, 2, 3), np.uint8)] * 120, labels)
    scorers = {"model": fake_scorer("m", 10), "baseline": fake_scorer("b", 10)}
    report = build_report(suite, units, inputs, scorers, source="x", spec={})
    names = ["fog", "snow"]
    model, base = (
        curves(units, suite, labels, "model", names),
        curves(units, suite, labels, "baseline", names),
    )
    clean = {
        r: float((units["clean"].arrays[f"{r}/scores"].argmax(1) != labels).mean())
        for r in ("model", "baseline")
    }
    assert report["mce"]["value"] == pytest.approx(
        metrics.mean_corruption_error(model, base), rel=1e-9
    )
    relative = metrics.relative_mean_corruption_error(
        model, base, clean["model"], clean["baseline"]
    )
    assert report["relative_mce"]["value"] == pytest.approx(relative, rel=1e-9)
    assert report["mce_baseline"] == "baseline model" and report["baseline"] == {"name": "b"}


def test_without_a_baseline_a_small_model_gets_errors_but_no_mce() -> None:
    suite = SuiteSpec(
        corruptions=("fog",), severities=(1, 5), calibration=True, bootstrap_resamples=200
    )
    labels = np.random.default_rng(4).integers(0, 10, 60)
    units = units_for(suite, labels, 10, ("model",), seed=5)
    inputs = EvaluationInputs([np.zeros((2, 2, 3), np.uint8)] * 60, labels, groups=["a", "b"] * 30)
    report = build_report(
        suite, units, inputs, {"model": fake_scorer("m", 10)}, source="x", spec={}
    )
    assert report["mce"] is None and report["corruptions"]["fog"]["ce"] is None
    fog5 = float((units["corruption/fog/5"].arrays["model/pred"] != labels).mean())
    assert report["corruptions"]["fog"]["errors"]["5"]["value"] == pytest.approx(fog5)
    assert set(report["subgroups"]["accuracy"]) == {"a", "b"}
    calibration_block = report["clean"]["calibration"]
    assert calibration_block["temperature"] > 0
    scores, _ = units["clean"].arrays["model/scores"], None
    from sklearn.metrics import log_loss

    from assay.server.robustness.calibration import brier_score
    from assay.server.stats.softmax import softmax

    assert calibration_block["nll"]["value"] == pytest.approx(
        log_loss(labels, softmax(scores), labels=range(10)), rel=1e-6
    )
    assert calibration_block["brier"]["value"] == pytest.approx(
        brier_score(scores, labels, from_logits=True), rel=1e-9
    )
    assert (
        calibration_block["nll"]["low"]
        <= calibration_block["nll"]["value"]
        <= calibration_block["nll"]["high"]
    )


def _estimates(node: object) -> list[dict[str, object]]:
    """Every E = {value, low, high, confidence} in a report."""
    if isinstance(node, dict):
        if set(node) == {"value", "low", "high", "confidence"}:
            return [node]
        return [e for child in node.values() for e in _estimates(child)]
    if isinstance(node, list):
        return [e for child in node for e in _estimates(child)]
    return []


@pytest.mark.parametrize("confidence", [0.95, 0.5])
def test_every_estimate_records_the_confidence_its_interval_used(
    confidence: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.server.robustness import report as report_module

    monkeypatch.setattr(report_module, "CONFIDENCE", confidence)
    suite = SuiteSpec(
        corruptions=("fog",), severities=(1, 2), calibration=True, bootstrap_resamples=200
    )
    labels = np.random.default_rng(6).integers(0, 10, 80)
    units = units_for(suite, labels, 10, ("model",), seed=7)
    inputs = EvaluationInputs([np.zeros((2, 2, 3), np.uint8)] * 80, labels, groups=["a", "b"] * 40)
    report = build_report(
        suite, units, inputs, {"model": fake_scorer("m", 10)}, source="x", spec={}
    )
    estimates = _estimates(report)
    assert len(estimates) >= 6
    assert {e["confidence"] for e in estimates} == {confidence}
    fog1 = (units["corruption/fog/1"].arrays["model/pred"] != labels).astype(np.float64)
    rows = np.random.default_rng(suite.seed).integers(0, 80, size=(200, 80))
    alpha = 1.0 - confidence
    expected = np.quantile(fog1[rows].mean(axis=1), [alpha / 2, 1 - alpha / 2])
    interval = report["corruptions"]["fog"]["errors"]["1"]
    assert (interval["low"], interval["high"]) == pytest.approx(tuple(expected), abs=1e-15)
