"""Typed job specs: defaults and ranges, round trips, and what a resume does with old specs."""

from __future__ import annotations

import json
from typing import Any, Generic

import pytest
from pydantic import ValidationError

from assay.server.aigen.specs import (
    JPEG_QUALITIES,
    RESIZE_SCALES,
    AigenEvaluationSpec,
    AigenProfileSpec,
)
from assay.server.errors import ErrorCode, InvalidArgumentError
from assay.server.jobs import JobState
from assay.server.jobs.manager import JobContext, JobManager
from assay.server.jobs.specs import JobSpec, SpecT, build_spec, describe, parse_spec
from assay.server.ood.specs import AnomalyEvaluationSpec, OodEvaluationSpec, OodProfileSpec
from assay.server.robustness.specs import RobustnessSpec
from assay.server.settings import JobSettings
from assay.server.store import Store
from assay.server.store.codec import dump_json

# --- defaults and ranges ------------------------------------------------------------


def test_defaults_live_in_the_spec() -> None:
    fit = OodProfileSpec(model="m", dataset="d")
    assert (fit.version, fit.scorers, fit.target_tpr, fit.holdout_fraction) == ("", (), 0.95, 0.2)
    assert (fit.sample_limit, fit.seed) == (None, 0)
    detector = AigenProfileSpec(model="d", dataset="x")
    assert (detector.target_fpr, detector.holdout_fraction) == (0.05, 0.3)
    evaluation = AigenEvaluationSpec(model="d", dataset="x")
    assert evaluation.jpeg_qualities == JPEG_QUALITIES == (95, 85, 75, 65, 50)
    assert evaluation.resize_scales == RESIZE_SCALES == (0.75, 0.5, 0.25)
    suite = RobustnessSpec(model="m", dataset="d")
    assert (suite.preset, suite.overrides, suite.baseline) == ("quick", {}, None)
    assert suite.suite().sample_limit == 200  # the quick preset


RANGES: list[tuple[type[JobSpec], str, list[Any], list[Any]]] = [
    (OodProfileSpec, "target_tpr", [0.5, 0.999], [0.4999, 1.0, float("nan"), "high"]),
    (OodProfileSpec, "holdout_fraction", [0.05, 0.5], [0.0499, 0.5001]),
    (OodProfileSpec, "sample_limit", [1, None], [0, -3]),
    (OodProfileSpec, "seed", [0, 2**64 - 1], [-1, 2**64]),
    (AigenProfileSpec, "target_fpr", [1e-9, 0.4999], [0.0, 0.5, float("nan"), float("inf")]),
    (AigenProfileSpec, "holdout_fraction", [0.05, 0.5], [0.04, 0.51]),
    (AigenEvaluationSpec, "jpeg_qualities", [[1, 100], [50]], [[0], [101], [50, 101]]),
    (AigenEvaluationSpec, "resize_scales", [[0.01, 0.99]], [[0.0], [1.0], [-0.5]]),
]
REQUIRED = {
    OodProfileSpec: {"model": "m", "dataset": "d"},
    AigenProfileSpec: {"model": "m", "dataset": "d"},
    AigenEvaluationSpec: {"model": "m", "dataset": "d"},
}


@pytest.mark.parametrize(
    ("spec_type", "field", "good", "bad"), RANGES, ids=[f"{r[0].__name__}.{r[1]}" for r in RANGES]
)
def test_ranges(spec_type: type[JobSpec], field: str, good: list[Any], bad: list[Any]) -> None:
    for value in good:
        spec = spec_type.model_validate({**REQUIRED[spec_type], field: value})
        got = getattr(spec, field)
        assert got == (tuple(value) if isinstance(value, list) else value)
    for value in bad:
        with pytest.raises(InvalidArgumentError) as info:
            build_spec(spec_type, **REQUIRED[spec_type], **{field: value})
        assert str(info.value).startswith(f"invalid request: {field}"), str(info.value)


def test_messages_name_the_field_say_what_is_wrong_and_truncate_the_value() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        build_spec(OodProfileSpec, model="m", dataset="d", target_tpr=1.5)
    assert str(info.value) == "invalid request: target_tpr: Input should be less than 1 (got 1.5)"
    with pytest.raises(InvalidArgumentError) as info:
        build_spec(OodProfileSpec, model="m", dataset="d", scorers="x" * 500)
    assert "scorers: Input should be a valid tuple" in str(info.value)
    assert len(str(info.value)) < 200
    with pytest.raises(InvalidArgumentError, match=r"dataset: Field required$"):
        build_spec(OodProfileSpec, model="m")
    with pytest.raises(InvalidArgumentError, match="bogus: Extra inputs are not permitted"):
        build_spec(OodProfileSpec, model="m", dataset="d", bogus=1)
    with pytest.raises(InvalidArgumentError, match="ood_datasets: give at least one OOD dataset"):
        build_spec(OodEvaluationSpec, model="m", in_dataset="i", ood_datasets=[])
    with pytest.raises(InvalidArgumentError, match="model: String should have at least 1"):
        build_spec(AnomalyEvaluationSpec, model="", dataset="d")


def test_build_spec_leaves_none_to_the_defaults_and_empty_lists_mean_default_points() -> None:
    fit = build_spec(OodProfileSpec, model="m", dataset="d", target_tpr=None, seed=7)
    assert (fit.target_tpr, fit.seed) == (0.95, 7)
    points = build_spec(
        AigenEvaluationSpec, model="m", dataset="d", jpeg_qualities=[], resize_scales=[0.5]
    )
    assert points.jpeg_qualities == JPEG_QUALITIES and points.resize_scales == (0.5,)


def test_robustness_spec_resolves_its_suite() -> None:
    spec = RobustnessSpec(model="m", dataset="d", preset="adversarial", overrides={"seed": 4})
    assert spec.suite().seed == 4 and spec.suite().corruptions == ()
    with pytest.raises(InvalidArgumentError, match="unknown corruptions"):
        build_spec(RobustnessSpec, model="m", dataset="d", overrides={"corruptions": ["sunburn"]})
    with pytest.raises(InvalidArgumentError, match="unknown suite preset 'heroic'"):
        build_spec(RobustnessSpec, model="m", dataset="d", preset="heroic")


def test_specs_are_frozen() -> None:
    spec = OodProfileSpec(model="m", dataset="d")
    with pytest.raises(ValidationError, match="frozen"):
        spec.target_tpr = 0.6  # type: ignore[misc]


# --- round trips and stored specs ---------------------------------------------------------

EXAMPLES: list[JobSpec] = [
    OodProfileSpec(model="m", version="2", dataset="d", scorers=("knn", "energy"), seed=2**63),
    OodEvaluationSpec(model="m", in_dataset="i", ood_datasets=("a", "b"), sample_limit=5),
    AnomalyEvaluationSpec(model="m", dataset="tiles"),
    AigenProfileSpec(model="det", dataset="x", target_fpr=0.01, holdout_fraction=0.25),
    AigenEvaluationSpec(model="det", dataset="x", jpeg_qualities=(90,), resize_scales=(0.5,)),
    RobustnessSpec(
        model="m",
        dataset="d",
        preset="quick",
        overrides={"corruptions": ["fog"], "attacks": [{"kind": "square_l2", "epsilon": 0.5}]},
        baseline="b",
    ),
]


@pytest.mark.parametrize("spec", EXAMPLES, ids=[type(s).__name__ for s in EXAMPLES])
def test_round_trip_through_strict_json(spec: JobSpec) -> None:
    stored = json.loads(dump_json(spec.model_dump(mode="json"), "job spec"))
    again = type(spec).model_validate(stored)
    assert again == spec and again.model_dump(mode="json") == stored


OLD_SPECS = [  # as the servicers wrote them before specs were typed
    (
        OodProfileSpec,
        {"model": "m", "version": "", "dataset": "d", "scorers": [], "target_tpr": 0.95,
         "holdout_fraction": 0.2, "sample_limit": None, "seed": 0},
    ),
    (
        OodEvaluationSpec,
        {"model": "m", "version": "", "in_dataset": "i", "ood_datasets": ["o"], "scorers": [],
         "sample_limit": 10, "seed": 0},
    ),
    (AnomalyEvaluationSpec, {"model": "m", "version": "", "dataset": "d"}),
    (
        AigenProfileSpec,
        {"model": "m", "version": "", "dataset": "d", "target_fpr": 0.05,
         "holdout_fraction": 0.3, "sample_limit": None, "seed": 0},
    ),
    (
        AigenEvaluationSpec,
        {"model": "m", "version": "", "dataset": "d", "sample_limit": None, "seed": 0,
         "jpeg_qualities": [], "resize_scales": []},
    ),
    (
        RobustnessSpec,
        {"model": "m", "version": "", "dataset": "d", "preset": "quick",
         "overrides": {"severities": [1]}, "baseline": None, "baseline_version": ""},
    ),
]  # fmt: skip


@pytest.mark.parametrize("spec_type,stored", OLD_SPECS, ids=[o[0].__name__ for o in OLD_SPECS])
def test_specs_stored_before_typing_still_validate(
    spec_type: type[JobSpec], stored: dict[str, Any]
) -> None:
    spec = parse_spec(spec_type, stored, "stored spec")
    if isinstance(spec, AigenEvaluationSpec):  # [] meant "the default points" then too
        assert spec.jpeg_qualities == JPEG_QUALITIES and spec.resize_scales == RESIZE_SCALES


def test_describe_joins_every_error() -> None:
    with pytest.raises(ValidationError) as info:
        OodProfileSpec.model_validate({"model": "m", "target_tpr": 2, "extra": True})
    assert describe(info.value) == (
        "dataset: Field required; target_tpr: Input should be less than 1 (got 2); "
        "extra: Extra inputs are not permitted (got True)"
    )


# --- the job manager over a real store (conftest's `store`: SQLite and PostgreSQL) ---------


class Recording(Generic[SpecT]):
    """A real job kind over any spec model: it records the specs it ran and returns them."""

    def __init__(self, spec_type: type[SpecT]) -> None:
        self.spec_type = spec_type
        self.ran: list[SpecT] = []

    def prepare(self, spec: SpecT) -> int:
        return 1

    async def run(self, context: JobContext[SpecT]) -> dict[str, Any]:
        assert isinstance(context.spec, self.spec_type)
        self.ran.append(context.spec)
        await context.put("only", {"images": 1}, {})
        return {"spec": context.spec.model_dump(mode="json")}


async def _finish(manager: JobManager, job_id: str) -> JobState:
    async for event in manager.watch(job_id):
        state = event.record.state
    return state


async def test_start_stores_the_dumped_spec_and_runs_the_typed_one(store: Store) -> None:
    kind = Recording(OodProfileSpec)
    manager = JobManager(store, {"toy_ood_profile": kind})
    record = await manager.start("toy_ood_profile", OodProfileSpec(model="m", dataset="d", seed=3))
    assert record.spec == OodProfileSpec(model="m", dataset="d", seed=3).model_dump(mode="json")
    assert await _finish(manager, record.id) is JobState.SUCCEEDED
    finished = store.get(record.id)  # the kind never reported progress; success completes it
    assert (finished.done, finished.total, finished.stage) == (1, 1, "done")
    assert kind.ran == [OodProfileSpec(model="m", dataset="d", seed=3)]
    # fields are validated the same way as a model is
    from_fields = await manager.start("toy_ood_profile", {"model": "m", "dataset": "d"})
    assert from_fields.spec["target_tpr"] == 0.95
    await _finish(manager, from_fields.id)
    with pytest.raises(InvalidArgumentError, match="invalid toy_ood_profile job spec: target_tpr"):
        await manager.start("toy_ood_profile", {"model": "m", "dataset": "d", "target_tpr": 3})
    with pytest.raises(TypeError, match="takes a OodProfileSpec"):
        await manager.start("toy_ood_profile", AnomalyEvaluationSpec(model="m", dataset="d"))
    assert len(store.list()) == 2


async def test_a_stored_spec_that_no_longer_validates_fails_only_its_job(
    store: Store,
) -> None:
    good = store.create("toy_ood_profile", {"model": "m", "dataset": "d", "target_tpr": 0.9}, 1)
    renamed = store.create("toy_ood_profile", {"model": "m", "dataset": "d", "tpr": 0.9}, 1)
    out_of_range = store.create(
        "toy_aigen_profile", {"model": "m", "dataset": "d", "target_fpr": 0.7}, 1
    )
    not_an_object = store.create("toy_aigen_profile", {"model": ["m"], "dataset": "d"}, 1)
    unknown = store.create("retired_kind", {"anything": 1}, 1)
    store.claim(good.id, "dead-server", 0.0)  # it was RUNNING when the server died
    fits, detectors = Recording(OodProfileSpec), Recording(AigenProfileSpec)
    kinds = {"toy_ood_profile": fits, "toy_aigen_profile": detectors}
    # Unclaimed for unrunnable_after_s (0 here): no replica of any version will run them.
    manager = JobManager(store, kinds, JobSettings(unrunnable_after_s=0.0))

    resumed = await manager.take_over()

    assert resumed == [good.id]
    assert await _finish(manager, good.id) is JobState.SUCCEEDED
    assert fits.ran == [OodProfileSpec(model="m", dataset="d", target_tpr=0.9)]
    assert detectors.ran == []
    failed = {
        job_id: store.get(job_id) for job_id in (renamed.id, out_of_range.id, not_an_object.id)
    }
    for record in failed.values():
        assert record.state is JobState.FAILED
        assert record.error is not None and "no longer valid" in record.error
        assert record.error_code is ErrorCode.FAILED_PRECONDITION  # the spec, not the request
    assert "tpr: Extra inputs are not permitted" in (failed[renamed.id].error or "")
    assert "target_fpr: Input should be less than 0.5 (got 0.7)" in (
        failed[out_of_range.id].error or ""
    )
    assert "model: Input should be a valid string" in (failed[not_an_object.id].error or "")
    assert store.get(unknown.id).state is JobState.FAILED
    assert store.get(unknown.id).error == "unknown job kind 'retired_kind'"
    assert store.get(unknown.id).error_code is ErrorCode.FAILED_PRECONDITION
    assert store.result(good.id) == {"spec": fits.ran[0].model_dump(mode="json")}
