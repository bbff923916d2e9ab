"""AI-generated image detection in the SDK: typed results and request builders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from assay.client._convert import ImageLike, image_message
from assay.v1 import aigen_pb2, common_pb2


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
    """The answer for one image: "generated", "real" or "unsure"."""

    id: str
    verdict: str
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


def generated_verdict(message: aigen_pb2.GeneratedResult) -> GeneratedVerdict:
    """GeneratedResult -> GeneratedVerdict."""
    name = aigen_pb2.AigenVerdict.Name(message.verdict).removeprefix("AIGEN_VERDICT_").lower()
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
        verdict=name,
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
    """DetectorProfile message -> DetectorProfileInfo."""
    return DetectorProfileInfo(
        detector=message.detector.name,
        version=message.detector.version,
        threshold=message.threshold,
        target_fpr=message.target_fpr,
        calibration_fpr=message.calibration_fpr,
        holdout_fpr=message.holdout_fpr,
        holdout_tpr=message.holdout_tpr,
        holdout_ap=message.holdout_ap,
        holdout_auroc=message.holdout_auroc,
        real_images=message.real_images,
        generated_images=message.generated_images,
        spectral=message.spectral,
    )


def _refs(detectors: Iterable[str]) -> list[common_pb2.ModelRef]:
    """Detector names ("name" or "name:version") -> ModelRefs."""
    refs = []
    for item in detectors:
        name, _, version = item.partition(":")
        refs.append(common_pb2.ModelRef(name=name, version=version))
    return refs


def detect_request(
    images: Iterable[ImageLike],
    *,
    detectors: Iterable[str] = (),
    stability: bool = False,
    max_flip_fraction: float | None = None,
    explain: bool = False,
    ids: Sequence[str] | None = None,
) -> aigen_pb2.DetectGeneratedRequest:
    """Build a DetectGeneratedRequest; detectors are "name" or "name:version"."""
    items = list(images)
    id_list = list(ids) if ids is not None else [""] * len(items)
    if len(id_list) != len(items):
        raise ValueError(f"{len(id_list)} ids for {len(items)} images")
    request = aigen_pb2.DetectGeneratedRequest(
        images=[image_message(i, n) for i, n in zip(items, id_list, strict=True)],
        detectors=_refs(detectors),
        stability=stability,
        explain=explain,
    )
    if max_flip_fraction is not None:
        request.max_flip_fraction = max_flip_fraction
    return request


def fit_request(
    detector: str,
    dataset: str,
    *,
    target_fpr: float = 0.05,
    holdout_fraction: float = 0.3,
    sample_limit: int | None = None,
    seed: int = 0,
) -> aigen_pb2.FitDetectorRequest:
    """Build a FitDetectorRequest."""
    request = aigen_pb2.FitDetectorRequest(
        detector=_refs([detector])[0],
        dataset=dataset,
        target_fpr=target_fpr,
        holdout_fraction=holdout_fraction,
        seed=seed,
    )
    if sample_limit is not None:
        request.sample_limit = sample_limit
    return request


def evaluate_request(
    detector: str,
    dataset: str,
    *,
    jpeg_qualities: Iterable[int] = (),
    resize_scales: Iterable[float] = (),
    sample_limit: int | None = None,
    seed: int = 0,
) -> aigen_pb2.EvaluateAigenDetectorRequest:
    """Build an EvaluateAigenDetectorRequest (empty curves = the server's defaults)."""
    request = aigen_pb2.EvaluateAigenDetectorRequest(
        detector=_refs([detector])[0],
        dataset=dataset,
        seed=seed,
        jpeg_qualities=list(jpeg_qualities),
        resize_scales=list(resize_scales),
    )
    if sample_limit is not None:
        request.sample_limit = sample_limit
    return request
