"""Typed job specs: one frozen pydantic model per job kind, defaults and ranges in one place.

A servicer builds a spec from its request (`build_spec`), the job manager
stores ``spec.model_dump(mode="json")`` and validates it again when a job
resumes after a restart: a stored spec that no longer validates fails that
job, with a message naming the field, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.server.errors import InvalidArgumentError

SpecT = TypeVar("SpecT", bound="JobSpec")

ModelName = Annotated[str, Field(min_length=1, max_length=128)]
"""A registered model's name (the registry checks that it exists)."""
Seed = Annotated[int, Field(ge=0, lt=2**64)]
"""Seed of every random choice a job makes (sampling, splits, resampling)."""
SampleLimit = Annotated[int, Field(ge=1)] | None
"""At most this many images, drawn with the seed; None takes them all."""
DatasetPath = Annotated[str, Field(min_length=1, max_length=4096)]
"""A folder or manifest under a dataset root (the dataset roots check where it is)."""

_SHOWN = 60
"""At most this many characters of a rejected value go into a message."""


class JobSpec(BaseModel):
    """Base of every job spec: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelJobSpec(JobSpec):
    """A job that runs one registered model."""

    model: ModelName
    version: str = ""
    """Empty: the model's current version."""


class SampledJobSpec(ModelJobSpec):
    """A job that may score a seeded sample of its dataset(s) instead of all of it."""

    sample_limit: SampleLimit = None
    seed: Seed = 0


def _value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def describe(exc: ValidationError) -> str:
    """A pydantic error as ``field: problem (got value)`` clauses, joined by "; "."""
    clauses = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "spec"
        if error["type"] == "value_error":
            problem = str(error.get("ctx", {}).get("error", error["msg"]))
        else:
            problem = error["msg"]
        shown = error["type"] != "missing" and error["loc"]  # not the whole spec
        got = f" (got {_value(error['input'])})" if shown else ""
        clauses.append(f"{where}: {problem}{got}")
    return "; ".join(clauses)


def parse_spec(spec_type: type[SpecT], data: Mapping[str, Any], what: str) -> SpecT:
    """Validate ``data`` as a ``spec_type``.

    Args:
        spec_type: The job kind's spec model.
        data: The fields (a request's, or a stored spec's JSON).
        what: What is being validated, for the message (e.g. "ood_profile request").

    Raises:
        InvalidArgumentError: ``invalid <what>: field: problem (got value)``.
    """
    try:
        return spec_type.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgumentError(f"invalid {what}: {describe(exc)}") from None


def build_spec(spec_type: type[SpecT], **fields: Any) -> SpecT:
    """A spec from keyword fields, as a servicer builds it from a request.

    Fields given as None are left out, so the model's defaults apply (proto3
    reports an unset scalar as its zero value; servicers pass None for those).

    Raises:
        InvalidArgumentError: A field is out of range or of the wrong type.
    """
    given = {name: value for name, value in fields.items() if value is not None}
    return parse_spec(spec_type, given, "request")
