"""What a robustness evaluation runs: the suite spec and its named presets.

A suite picks corruptions and severities, perturbation sequences, shift
consistency, calibration, subgroup analysis, attacks with budgets, a sample
limit and the seed that makes every generated image reproducible.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assay.server.errors import InvalidArgumentError
from assay.server.robustness.corruptions import EXTRAS, IMAGENET_C, REGISTRY, SEVERITIES
from assay.server.robustness.perturbations import PERTURBATIONS


class AttackKind(enum.StrEnum):
    """Adversarial attacks: query-only (any backend) or white-box (needs a torch copy)."""

    SQUARE_LINF = "square_linf"
    SQUARE_L2 = "square_l2"
    FGSM = "fgsm"
    PGD_LINF = "pgd_linf"
    PGD_L2 = "pgd_l2"


class AttackSpec(BaseModel):
    """One attack and its budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AttackKind
    epsilon: Annotated[float, Field(gt=0.0, le=1000.0)]
    """Radius of the threat model in [0, 1] pixel scale (an L2 radius may exceed 1)."""
    queries: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Query budget per image (square attacks)."""
    steps: Annotated[int, Field(ge=1, le=1000)] = 10
    """Iterations (PGD)."""

    @model_validator(mode="after")
    def _linf_radius(self) -> AttackSpec:
        if (
            self.kind in (AttackKind.SQUARE_LINF, AttackKind.FGSM, AttackKind.PGD_LINF)
            and self.epsilon > 1
        ):
            raise ValueError(
                f"an L-infinity epsilon is at most 1 (pixel scale), got {self.epsilon}"
            )
        return self


def _known_names(names: tuple[str, ...], known: Collection[str], what: str) -> tuple[str, ...]:
    """`names` without repeats (first occurrence kept), or ValueError listing the unknown ones."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {', '.join(sorted(known))}")
    return tuple(dict.fromkeys(names))


class SuiteSpec(BaseModel):
    """A robustness suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corruptions: tuple[str, ...] = IMAGENET_C + EXTRAS
    severities: tuple[int, ...] = SEVERITIES
    perturbations: tuple[str, ...] = ()
    perturbation_frames: Annotated[int, Field(ge=2, le=100)] = 10
    shift_consistency: bool = False
    calibration: bool = True
    subgroups: bool = True
    """Per-group accuracy when the dataset has a group column."""
    attacks: tuple[AttackSpec, ...] = ()
    sample_limit: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0
    bootstrap_resamples: Annotated[int, Field(ge=100, le=100_000)] = 1000

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return _known_names(names, REGISTRY, "corruptions")

    @field_validator("severities")
    @classmethod
    def _valid_severities(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        bad = [v for v in values if v not in SEVERITIES]
        if bad:
            raise ValueError(f"severities must be 1..5, got {bad}")
        return tuple(sorted(set(values)))

    @field_validator("perturbations")
    @classmethod
    def _known_perturbations(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return _known_names(names, PERTURBATIONS, "perturbations")

    def units(self) -> list[str]:
        """The unit keys of this suite, in execution order (clean first)."""
        keys = ["clean"]
        keys += [f"corruption/{c}/{s}" for c in self.corruptions for s in self.severities]
        keys += [f"perturbation/{p}" for p in self.perturbations]
        if self.shift_consistency:
            keys.append("shift")
        keys += [f"attack/{i}/{a.kind.value}" for i, a in enumerate(self.attacks)]
        return keys


PRESETS: dict[str, SuiteSpec] = {
    "quick": SuiteSpec(
        corruptions=("gaussian_noise", "defocus_blur", "fog", "contrast", "jpeg_compression"),
        severities=(1, 3, 5),
        perturbations=("translate", "gaussian_noise"),
        perturbation_frames=6,
        shift_consistency=True,
        sample_limit=200,
        bootstrap_resamples=500,
    ),
    "standard": SuiteSpec(
        perturbations=tuple(sorted(PERTURBATIONS)),
        shift_consistency=True,
    ),
    "adversarial": SuiteSpec(
        corruptions=(),
        severities=SEVERITIES,
        attacks=(
            AttackSpec(kind=AttackKind.SQUARE_LINF, epsilon=8 / 255, queries=500),
            AttackSpec(kind=AttackKind.SQUARE_L2, epsilon=0.5, queries=500),
        ),
        sample_limit=100,
    ),
}


def parse_suite(preset: str | None, overrides: dict[str, object] | None = None) -> SuiteSpec:
    """A preset (default "quick") with optional field overrides, validated.

    Raises:
        InvalidArgumentError: naming the preset or the invalid field.
    """
    name = preset or "quick"
    base = PRESETS.get(name)
    if base is None:
        raise InvalidArgumentError(f"unknown suite preset {name!r}; presets: {', '.join(PRESETS)}")
    if not overrides:
        return base
    try:
        return SuiteSpec.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidArgumentError(f"invalid suite: {details}") from None
