"""The specs of the OOD job kinds: profile fits, detector comparisons, anomaly evaluations.

Defaults and ranges live here and nowhere else; servicers build these from
requests and the job manager stores and re-validates them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from assay.server.jobs.specs import DatasetPath, ModelJobSpec, SampledJobSpec


class OodProfileSpec(SampledJobSpec):
    """A profile fit (job kind "ood_profile")."""

    dataset: DatasetPath
    """In-distribution reference images."""
    scorers: tuple[str, ...] = ()
    """Scorers to fit; empty: every scorer the model's outputs allow."""
    target_tpr: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.95
    """Share of in-distribution holdout images each threshold keeps."""
    holdout_fraction: Annotated[float, Field(ge=0.05, le=0.5)] = 0.2
    """Share of the reference images held out to set thresholds."""


class OodEvaluationSpec(SampledJobSpec):
    """A comparison of the profile's scorers (job kind "ood_evaluation"); samples are per set."""

    in_dataset: DatasetPath
    ood_datasets: tuple[DatasetPath, ...]
    """One or more out-of-distribution sets."""
    scorers: tuple[str, ...] = ()
    """Scorers to compare; empty: every scorer in the profile."""

    @field_validator("ood_datasets")
    @classmethod
    def _at_least_one(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one OOD dataset")
        return value


class AnomalyEvaluationSpec(ModelJobSpec):
    """A PatchCore evaluation on an MVTec-style folder (job kind "anomaly_evaluation")."""

    dataset: DatasetPath
    """A folder with test/good/ and test/<defect>/ (and optionally ground_truth/)."""
