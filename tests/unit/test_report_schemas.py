"""The shipped report JSON Schemas: valid, complete, and strict enough to reject broken reports.

Every report the whole test session produces is validated by the session
fixture in tests/conftest.py; these tests check the schema files themselves.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from types import SimpleNamespace
from typing import Any

import jsonschema
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from assay.server import report_schemas
from assay.server.aigen import evaluate_job as aigen_evaluate_job
from assay.server.aigen import fit_job
from assay.server.aigen.evaluate_job import DetectorEvaluationJobs
from assay.server.aigen.fit_job import DetectorFits
from assay.server.ood import anomaly_job, evaluate_job, fitting
from assay.server.ood.anomaly_job import AnomalyEvaluations
from assay.server.ood.evaluate_job import OodScorerEvaluations
from assay.server.ood.service import OodProfiles
from assay.server.robustness import report as robustness_report
from assay.server.robustness.evaluation import RobustnessJobs
from assay.server.robustness.report import UnitData, build_report
from assay.server.robustness.runner import EvaluationInputs
from assay.server.robustness.suite import SuiteSpec

FOLDER = resources.files("assay.server") / "schemas"


@pytest.mark.parametrize("name", report_schemas.REPORT_SCHEMAS)
def test_every_shipped_schema_is_a_valid_draft_2020_12_schema_named_by_its_id(name: str) -> None:
    document = json.loads((FOLDER / report_schemas.file_name(name)).read_text("utf-8"))
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == name
    assert document == report_schemas.schema_for(name)


def test_the_folder_holds_exactly_the_registered_schemas() -> None:
    shipped = {p.name for p in FOLDER.iterdir() if p.name.endswith(".json")}
    assert shipped == {report_schemas.file_name(n) for n in report_schemas.REPORT_SCHEMAS}


def test_every_schema_the_server_writes_and_every_job_kind_has_a_schema_file() -> None:
    written = {
        robustness_report.SCHEMA,
        evaluate_job.SCHEMA,
        anomaly_job.SCHEMA,
        aigen_evaluate_job.SCHEMA,
        fit_job.PROFILE_SUMMARY_SCHEMA,
        fitting.PROFILE_SUMMARY_SCHEMA,
    }
    assert written == set(report_schemas.REPORT_SCHEMAS)
    kinds = {
        k.kind
        for k in (
            RobustnessJobs,
            OodScorerEvaluations,
            AnomalyEvaluations,
            DetectorEvaluationJobs,
            OodProfiles,
            DetectorFits,
        )
    }
    assert kinds == set(report_schemas.JOB_KIND_SCHEMAS)
    assert set(report_schemas.JOB_KIND_SCHEMAS.values()) == set(report_schemas.REPORT_SCHEMAS)


def test_an_unknown_or_contradicting_schema_is_refused() -> None:
    with pytest.raises(report_schemas.UnknownSchemaError, match="no report schema"):
        report_schemas.schema_for("assay.robustness.report/v2")
    with pytest.raises(report_schemas.UnknownSchemaError, match="expected"):
        report_schemas.schema_name({"schema": "assay.ood.evaluation/v1"}, "robustness")
    with pytest.raises(report_schemas.UnknownSchemaError, match="no `schema` field"):
        report_schemas.schema_name({"value": 1}, "a_toy_kind")
    assert report_schemas.schema_name({}, "ood_profile") == "assay.ood.profile_summary/v1"


def _scorer(classes: int) -> SimpleNamespace:
    model = SimpleNamespace(
        name="m", config=SimpleNamespace(version="1"),
        backend=SimpleNamespace(metadata=lambda: SimpleNamespace(kind="onnx")),
    )  # fmt: skip
    return SimpleNamespace(
        model=model, labels=tuple(str(i) for i in range(classes)), outputs_probabilities=False
    )


@pytest.fixture
def robustness() -> dict[str, Any]:
    """A real robustness report from synthetic units: corruptions, calibration, subgroups."""
    rng = np.random.default_rng(0)
    n, classes = 60, 4
    labels = rng.integers(0, classes, n)
    suite = SuiteSpec(
        corruptions=("gaussian_noise",),
        severities=(1, 3),
        perturbations=(),
        bootstrap_resamples=100,
    )
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    logits[np.arange(n), labels] += 2.0
    units = {"clean": UnitData({"seconds": 0.1}, {"model/scores": logits})}
    for s in suite.severities:
        wrong = rng.random(n) < 0.2 * s
        pred = np.where(wrong, (labels + 1) % classes, labels).astype(np.int32)
        units[f"corruption/gaussian_noise/{s}"] = UnitData({"seconds": 0.1}, {"model/pred": pred})
    groups = ["even" if i % 2 == 0 else "odd" for i in range(n)]
    inputs = EvaluationInputs([], labels, groups)
    report = build_report(
        suite, units, inputs, {"model": _scorer(classes)}, source="x", spec={"model": "m"}
    )
    document: dict[str, Any] = json.loads(json.dumps(report, allow_nan=False))
    return document


def _violations(report: dict[str, Any]) -> set[str]:
    return {v.split(":")[0] for v in report_schemas.violations(report)}


def test_a_real_report_validates(robustness: dict[str, Any]) -> None:
    assert report_schemas.validate(robustness) == "assay.robustness.report/v1"
    assert report_schemas.violations(robustness) == []
    assert robustness["subgroups"] is not None and robustness["clean"]["calibration"]


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("clean", "error", "value"), 1.25, "$.clean.error.value"),
        (("corruptions", "gaussian_noise", "errors", "3", "high"), -0.1,
         "$.corruptions.gaussian_noise.errors['3'].high"),
        (("clean", "calibration", "ece", "confidence"), 95, "$.clean.calibration.ece.confidence"),
        (("subgroups", "spread"), 1.5, "$.subgroups.spread"),
        (("mce_baseline",), "imagenet", "$.mce_baseline"),
        (("dataset", "images"), 2.5, "$.dataset.images"),
        (("model", "name"), None, "$.model.name"),
    ],
)  # fmt: skip
def test_out_of_range_and_mistyped_values_are_rejected(
    robustness: dict[str, Any], path: tuple[str, ...], value: object, where: str
) -> None:
    broken = copy.deepcopy(robustness)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert where in _violations(broken)
    with pytest.raises(jsonschema.ValidationError):
        report_schemas.validate(broken)


@pytest.mark.parametrize(
    "path", [("attacks",), ("clean", "error"), ("clean", "calibration", "reliability"), ("schema",)]
)
def test_a_missing_required_key_is_rejected(
    robustness: dict[str, Any], path: tuple[str, ...]
) -> None:
    broken = copy.deepcopy(robustness)
    node = broken
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    if path == ("schema",):  # then the report names no schema: the job kind must
        with pytest.raises(jsonschema.ValidationError, match="'schema' is a required property"):
            report_schemas.validate(broken, "robustness")
        return
    with pytest.raises(jsonschema.ValidationError, match=f"'{path[-1]}' is a required property"):
        report_schemas.validate(broken)


def test_unknown_keys_are_rejected_where_the_structure_is_fixed(
    robustness: dict[str, Any],
) -> None:
    broken = copy.deepcopy(robustness)
    broken["clean"]["error"]["stderr"] = 0.01
    broken["mce_v2"] = None
    assert {"$.clean.error", "$"} <= _violations(broken)


def test_a_fit_result_names_its_schema_and_is_checked_against_it() -> None:
    summary = {
        "schema": "assay.ood.profile_summary/v1",
        "model": {"name": "digits_cnn", "version": "1"},
        "fingerprint": "sha256:" + "0" * 64,
        "target_tpr": 0.95,
        "default_scorer": "energy",
        "scorers": {"energy": {"threshold": -3.1, "holdout_quantiles": [0.0] * 7}},
        "reference_images": 100,
    }
    assert report_schemas.validate(summary, "ood_profile") == "assay.ood.profile_summary/v1"
    unnamed = {k: v for k, v in summary.items() if k != "schema"}
    with pytest.raises(jsonschema.ValidationError, match="'schema' is a required property"):
        report_schemas.validate(unnamed, "ood_profile")
    with pytest.raises(
        jsonschema.ValidationError, match="greater than or equal to the maximum of 1"
    ):
        report_schemas.validate({**summary, "target_tpr": 1.0}, "ood_profile")
    with pytest.raises(jsonschema.ValidationError, match="is too short"):
        short = {"energy": {"threshold": 1.0, "holdout_quantiles": [0.0]}}
        report_schemas.validate({**summary, "scorers": short}, "ood_profile")
