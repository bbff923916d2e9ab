"""The specs of the aigen job kinds: detector profile fits and detector evaluations.

Defaults and ranges live here and nowhere else; servicers build these from
requests and the job manager stores and re-validates them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import Field, ValidationInfo, field_validator

from assay.server.jobs.specs import DatasetPath, SampledJobSpec

JPEG_QUALITIES: Final = (95, 85, 75, 65, 50)
RESIZE_SCALES: Final = (0.75, 0.5, 0.25)


class AigenProfileSpec(SampledJobSpec):
    """A detector profile fit (job kind "aigen_profile"); ``model`` is the detector."""

    dataset: DatasetPath
    """A labelled real/generated set."""
    target_fpr: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    """Share of real images the fitted threshold may flag."""
    holdout_fraction: Annotated[float, Field(ge=0.05, le=0.5)] = 0.3
    """Share of each class held out to report the threshold's rates."""


class AigenEvaluationSpec(SampledJobSpec):
    """A detector evaluation with robustness points (job kind "aigen_evaluation").

    ``model`` is the detector.
    """

    dataset: DatasetPath
    """A labelled real/generated set (a ``group`` column names generators)."""
    jpeg_qualities: tuple[Annotated[int, Field(ge=1, le=100)], ...] = JPEG_QUALITIES
    """JPEG re-encoding qualities to score at; empty means the defaults."""
    resize_scales: tuple[Annotated[float, Field(gt=0.0, lt=1.0)], ...] = RESIZE_SCALES
    """Down-scaling factors to score at; empty means the defaults."""

    @field_validator("jpeg_qualities", "resize_scales", mode="before")
    @classmethod
    def _empty_means_default(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, list | tuple) and not value:
            return JPEG_QUALITIES if info.field_name == "jpeg_qualities" else RESIZE_SCALES
        return value
