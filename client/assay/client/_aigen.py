"""AI-generated image detection in the SDK: typed results and their parsers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum

from assay.client._types import epoch_seconds
from assay.v1 import aigen_pb2


class AigenVerdict(StrEnum):
    """The answer for one image; a str, so `verdict == "generated"` holds for GENERATED."""

    UNSPECIFIED = "unspecified"
    GENERATED = "generated"
    REAL = "real"
    UNSURE = "unsure"


@dataclass(frozen=True)
class CropScore:
    """One native-resolution crop's probability (top/left in source pixels)."""

    top: int
    left: int
    height: int
    width: int
    probability: float


@dataclass(frozen=True)
class DetectorScore:
    """One detector's view of one image."""

    detector: str
    version: str
    probability: float
    threshold: float
    calibrated: bool
    log_odds: float
    generated: bool
    crops: list[CropScore] = field(default_factory=list)


@dataclass(frozen=True)
class VariantScore:
    """The decision on one re-encoded copy (jpeg_q95, downscale_0.5, ...)."""

    name: str
    log_odds: float
    generated: bool
    flipped: bool


@dataclass(frozen=True)
class Stability:
    """How the decision fared under re-encoding."""

    flip_fraction: float
    max_flip_fraction: float
    variants: list[VariantScore]


@dataclass(frozen=True)
class SpectralEvidence:
    """Deviation from the real-photo spectrum (supporting evidence only)."""

    score: float
    threshold: float
    deviates: bool
    spectrum: list[float]
    peak_score: float


@dataclass(frozen=True)
class GeneratedVerdict:
    """The answer for one image: generated, real or unsure (when re-encoding flips it)."""

    id: str
    verdict: AigenVerdict
    probability: float
    log_odds: float
    detectors: list[DetectorScore]
    stability: Stability | None = None
    spectral: SpectralEvidence | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def calibrated(self) -> bool:
        """True when every detector decided at a fitted threshold."""
        return all(d.calibrated for d in self.detectors)


@dataclass(frozen=True)
class DetectorProfileInfo:
    """A stored detector profile."""

    detector: str
    version: str
    threshold: float
    target_fpr: float
    calibration_fpr: float
    holdout_fpr: float
    holdout_tpr: float
    holdout_ap: float
    holdout_auroc: float
    real_images: int
    generated_images: int
    spectral: bool
    created_at: float
    """When the profile was fitted, seconds since the epoch."""
    problem: str = ""
    """Why the stored profile cannot be read ("unreadable: ..."), empty when it can.

    An unreadable profile has only `detector` and `version` besides; detection
    with it fails until it is refitted or deleted."""


def generated_verdict(message: aigen_pb2.GeneratedResult) -> GeneratedVerdict:
    """GeneratedResult -> GeneratedVerdict."""
    known = message.verdict in aigen_pb2.AigenVerdict.values()
    name = aigen_pb2.AigenVerdict.Name(message.verdict) if known else "AIGEN_VERDICT_UNSPECIFIED"
    stability = None
    if message.HasField("stability"):
        s = message.stability
        stability = Stability(
            s.flip_fraction,
            s.max_flip_fraction,
            [VariantScore(v.name, v.log_odds, v.generated, v.flipped) for v in s.variants],
        )
    spectral = None
    if message.HasField("spectral"):
        e = message.spectral
        spectral = SpectralEvidence(
            e.score, e.threshold, e.deviates, list(e.spectrum), e.peak_score
        )
    return GeneratedVerdict(
        id=message.id,
        verdict=AigenVerdict(name.removeprefix("AIGEN_VERDICT_").lower()),
        probability=message.probability,
        log_odds=message.log_odds,
        detectors=[
            DetectorScore(
                d.detector.name,
                d.detector.version,
                d.probability,
                d.threshold,
                d.calibrated,
                d.log_odds,
                d.generated,
                [CropScore(c.top, c.left, c.height, c.width, c.probability) for c in d.crops],
            )
            for d in message.detectors
        ],
        stability=stability,
        spectral=spectral,
        notes=list(message.notes),
    )


def detector_profile(message: aigen_pb2.DetectorProfile) -> DetectorProfileInfo:
    """DetectorProfile -> DetectorProfileInfo (fields after version share names, bar created_at)."""
    named = [f.name for f in fields(DetectorProfileInfo)][2:]
    shared = {name: getattr(message, name) for name in named if name != "created_at"}
    return DetectorProfileInfo(
        message.detector.name,
        message.detector.version,
        **shared,
        created_at=epoch_seconds(message.created_at),
    )
