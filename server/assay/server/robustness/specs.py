"""The spec of a robustness suite job (job kind "robustness").

The suite is kept as the caller gave it (a preset and the fields it
overrides), which the report echoes; validating the spec resolves it, so a
stored spec whose suite no longer parses fails its job at resume.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from assay.server.errors import InvalidArgumentError
from assay.server.jobs.specs import DatasetPath, ModelJobSpec, ModelName
from assay.server.robustness.suite import SuiteSpec, parse_suite


class RobustnessSpec(ModelJobSpec):
    """A robustness suite on a dataset, optionally against a baseline model."""

    dataset: DatasetPath
    preset: str = "quick"
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Suite fields that replace the preset's (see `SuiteSpec`)."""
    baseline: ModelName | None = None
    """A model classifying the same classes, scored on the same images (paired)."""
    baseline_version: str = ""

    @model_validator(mode="after")
    def _suite_parses(self) -> RobustnessSpec:
        self.suite()
        return self

    def suite(self) -> SuiteSpec:
        """The preset with its overrides; ValueError naming the field when invalid."""
        try:
            return parse_suite(self.preset, self.overrides)
        except InvalidArgumentError as exc:
            raise ValueError(str(exc)) from None
