"""The shared request and response conversions of the servicers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from assay.server.aigen.specs import AigenEvaluationSpec, AigenProfileSpec
from assay.server.errors import InvalidArgumentError
from assay.server.ood.specs import AnomalyEvaluationSpec, OodEvaluationSpec, OodProfileSpec
from assay.server.services.converters import require, spec_from_request
from assay.server.services.mirror import mirrored
from assay.v1 import aigen_pb2, common_pb2, ood_pb2


def test_unset_request_fields_take_the_spec_defaults() -> None:
    request = ood_pb2.FitProfileRequest(model=common_pb2.ModelRef(name="m"), dataset="d")
    assert spec_from_request(OodProfileSpec, request) == OodProfileSpec(model="m", dataset="d")


def test_set_request_fields_reach_the_spec_by_name() -> None:
    request = aigen_pb2.FitDetectorRequest(
        detector=common_pb2.ModelRef(name="det", version="2"),
        dataset="set",
        target_fpr=0.01,
        holdout_fraction=0.4,
        sample_limit=7,
        seed=9,
    )
    spec = spec_from_request(AigenProfileSpec, request, ref="detector")
    assert spec == AigenProfileSpec(
        model="det",
        version="2",
        dataset="set",
        target_fpr=0.01,
        holdout_fraction=0.4,
        sample_limit=7,
        seed=9,
    )


def test_an_optional_field_set_to_zero_is_passed_and_validated() -> None:
    request = ood_pb2.FitProfileRequest(
        model=common_pb2.ModelRef(name="m"), dataset="d", sample_limit=0
    )
    with pytest.raises(InvalidArgumentError, match="sample_limit: Input should be greater"):
        spec_from_request(OodProfileSpec, request)


def test_repeated_fields_are_passed_even_empty_so_the_spec_says_what_empty_means() -> None:
    evaluate = aigen_pb2.EvaluateAigenDetectorRequest(
        detector=common_pb2.ModelRef(name="det"), dataset="set"
    )
    spec = spec_from_request(AigenEvaluationSpec, evaluate, ref="detector")
    assert spec.jpeg_qualities == (95, 85, 75, 65, 50)  # empty means the defaults
    no_ood = ood_pb2.EvaluateOodScorersRequest(model=common_pb2.ModelRef(name="m"), in_dataset="i")
    with pytest.raises(InvalidArgumentError, match="ood_datasets: give at least one OOD dataset"):
        spec_from_request(OodEvaluationSpec, no_ood)


def test_require_names_every_required_field() -> None:
    require(("model.name", "m"), ("dataset", "d"))
    with pytest.raises(InvalidArgumentError, match=r"^model.name and dataset are required$"):
        require(("model.name", "m"), ("dataset", ""))


@dataclass(frozen=True)
class _Crop:
    top: int
    left: int
    height: int
    width: int
    probability: float
    only_in_the_record: str = "ignored"


def test_mirrored_copies_same_named_fields_and_applies_overrides() -> None:
    crop = _Crop(1, 2, 3, 4, 0.5)
    assert mirrored(aigen_pb2.CropScore, crop) == aigen_pb2.CropScore(
        top=1, left=2, height=3, width=4, probability=0.5
    )
    assert mirrored(aigen_pb2.CropScore, crop, top=9).top == 9


def test_mirrored_refuses_a_record_field_of_the_wrong_type() -> None:
    @dataclass(frozen=True)
    class Stamped:
        fingerprint: str
        created_at: float  # a Timestamp in the message: needs an override

    with pytest.raises(AttributeError, match="Timestamp"):
        mirrored(ood_pb2.OodProfile, Stamped("x", 1.0))
    with pytest.raises(TypeError):
        mirrored(aigen_pb2.CropScore, _Crop("1", 2, 3, 4, 0.5))  # type: ignore[arg-type]


START_REQUESTS = [
    (ood_pb2.FitProfileRequest, OodProfileSpec, "model"),
    (ood_pb2.EvaluateOodScorersRequest, OodEvaluationSpec, "model"),
    (ood_pb2.EvaluateAnomalyRequest, AnomalyEvaluationSpec, "model"),
    (aigen_pb2.FitDetectorRequest, AigenProfileSpec, "detector"),
    (aigen_pb2.EvaluateAigenDetectorRequest, AigenEvaluationSpec, "detector"),
]


@pytest.mark.parametrize(("request_type", "spec_type", "ref"), START_REQUESTS)
def test_every_start_request_field_has_a_spec_field(
    request_type: type, spec_type: type, ref: str
) -> None:
    # spec_from_request copies fields by name: a request field without a spec field
    # would be dropped silently, so a new proto field must come with its spec field.
    names = {f.name for f in request_type.DESCRIPTOR.fields} - {ref}
    assert names <= set(spec_type.model_fields), names - set(spec_type.model_fields)
