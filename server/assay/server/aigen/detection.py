"""DetectGenerated: calibrated, ensembled, stability-checked verdicts for request images.

Per detector, the pooled probability ``p`` is compared with the detector
profile's threshold ``t`` (fitted at a target FPR on real images), or with
0.5 when the detector has no profile, in which case the result says so:
CNNDetection (Wang et al., CVPR 2020) found accuracy at 0.5 near chance for
detectors whose AP is high. Several detectors combine by the mean of their
calibrated log-odds ``logit(p) - logit(t)`` (generated iff the mean >= 0).

With stability, each image is re-scored after the re-encodings of
:mod:`~assay.server.aigen.stability`; the verdict is UNSURE when more than
``max_flip_fraction`` of them change the decision.

Domain code: numpy in, dataclasses out; no grpc or protobuf here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.server.aigen.calibration import calibrated_log_odds
from assay.server.aigen.images import decode_all
from assay.server.aigen.profiles import DetectorProfile
from assay.server.aigen.scoring import (
    CropProbability,
    DetectorScorer,
    DetectorScores,
    check_detector,
)
from assay.server.aigen.spectral import SpectralEvidence, spectral_evidence
from assay.server.aigen.stability import Verdict, stable_verdict, variants
from assay.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    ModelNotReadyError,
)
from assay.server.models.config import Task
from assay.server.models.preprocess import ImageInput, check_request_images
from assay.server.models.registry import ModelRegistry, ServedModel
from assay.server.profiles import ProfileStore, fingerprint
from assay.server.settings import AigenSettings

DEFAULT_THRESHOLD = 0.5
STABILITY_GROUP = 8
"""Images whose re-encoded variants are held in memory at once."""
PROBE_SEED = 20261129
PROBE_SIZE = (96, 128)
"""Probe images are larger than small detectors' crops, so the crop path is exercised."""


@dataclass(frozen=True)
class DetectQuery:
    """One DetectGenerated request in domain terms."""

    images: Sequence[ImageInput]
    detectors: Sequence[tuple[str, str]] = ()
    """(name, version) pairs; empty = the configured defaults."""
    ids: Sequence[str] = ()
    stability: bool = False
    max_flip_fraction: float | None = None
    explain: bool = False


@dataclass(frozen=True)
class Calibration:
    """A detector's decision threshold and where it came from."""

    threshold: float
    profile: DetectorProfile | None

    @property
    def calibrated(self) -> bool:
        """True when the threshold comes from a fitted profile."""
        return self.profile is not None


@dataclass(frozen=True)
class DetectorVerdict:
    """One detector's view of one image."""

    detector: str
    version: str
    probability: float
    threshold: float
    calibrated: bool
    log_odds: float
    generated: bool
    crops: list[CropProbability] = field(default_factory=list)


@dataclass(frozen=True)
class VariantVerdict:
    """The (ensemble) decision on one re-encoded variant."""

    name: str
    log_odds: float
    generated: bool
    flipped: bool


@dataclass(frozen=True)
class StabilityReport:
    """How the decision fared under re-encoding."""

    flip_fraction: float
    max_flip_fraction: float
    variants: list[VariantVerdict]


@dataclass(frozen=True)
class ImageVerdict:
    """The answer for one image."""

    id: str
    verdict: Verdict
    probability: float
    log_odds: float
    detectors: list[DetectorVerdict]
    stability: StabilityReport | None = None
    spectral: SpectralEvidence | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DetectResult:
    """Verdicts in request order, with the detectors that made them."""

    detectors: list[tuple[str, str]]
    results: list[ImageVerdict]


def _log_odds(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """N x D calibrated log-odds (see :func:`calibrated_log_odds`)."""
    return calibrated_log_odds(probabilities, list(thresholds))


def decide(
    probabilities: np.ndarray,
    thresholds: Sequence[float],
    log_odds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the ensemble log-odds and the decision "generated".

    One detector decides ``p >= t`` exactly (log-odds clip at 1e-6 could blur a
    threshold right at 0 or 1); several decide ``mean log-odds >= 0``. Pass the
    per-detector ``log_odds`` when already computed.
    """
    z = _log_odds(probabilities, thresholds) if log_odds is None else log_odds
    mean = z.mean(axis=1)
    if probabilities.shape[1] == 1:
        return mean, probabilities[:, 0] >= thresholds[0]
    return mean, mean >= 0.0


class AigenDetectors:
    """Served detectors, their profiles, and the DetectGenerated computation."""

    def __init__(
        self,
        registry: ModelRegistry,
        pool: Executor,
        store: ProfileStore[DetectorProfile],
        settings: AigenSettings,
        max_pixels: int,
    ) -> None:
        self._registry = registry
        self._pool = pool
        self.store = store
        self.settings = settings
        self.max_pixels = max_pixels
        self.scorer = DetectorScorer(pool)
        self._fingerprints: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------ detectors

    def resolve(self, refs: Sequence[tuple[str, str]]) -> list[ServedModel]:
        """The detectors named, else the configured defaults, else every aigen_detector."""
        if refs:
            models = [self._registry.get(name, version) for name, version in refs]
        elif self.settings.default_detectors:
            models = [self._registry.get(name) for name in self.settings.default_detectors]
        else:
            models = [m for m in self._latest() if m.config.task is Task.AIGEN_DETECTOR]
            if not models:
                raise FailedPreconditionError(
                    "no aigen_detector model is registered; add one (task: aigen_detector) "
                    "or name a detector"
                )
        seen = set()
        for model in models:
            check_detector(model)
            key = (model.name, model.config.version)
            if key in seen:
                raise InvalidArgumentError(f"detector {model.name!r} is named twice")
            seen.add(key)
        return models

    def _latest(self) -> list[ServedModel]:
        names = sorted({m.name for m in self._registry.all()})
        return [self._registry.get(name) for name in names]

    async def fingerprint(self, model: ServedModel) -> str:
        """The detector's scores on a fixed probe, hashed (cached per version)."""
        key = (model.name, model.config.version)
        if key not in self._fingerprints:
            rng = np.random.default_rng(PROBE_SEED)
            probe = [rng.integers(0, 256, (*PROBE_SIZE, 3), dtype=np.uint8) for _ in range(2)]
            scores = await self.scorer.score(model, probe)
            crops = np.array([c.probability for per in scores.crops for c in per])
            arrays = {"pooled": scores.probabilities}
            if crops.size:
                arrays["crops"] = crops
            self._fingerprints[key] = fingerprint(arrays)
        return self._fingerprints[key]

    async def calibration(self, model: ServedModel) -> Calibration:
        """The profile's threshold, or 0.5 without a profile.

        Raises:
            FailedPreconditionError: the profile was fitted on other weights.
        """
        profile = self.store.load(model.name, model.config.version)
        if profile is None:
            return Calibration(DEFAULT_THRESHOLD, None)
        if profile.fingerprint != await self.fingerprint(model):
            raise FailedPreconditionError(
                f"the profile of detector {model.name!r} was fitted on different weights "
                "(fingerprint mismatch); refit it with FitDetector or delete it"
            )
        return Calibration(profile.threshold, profile)

    def delete(self, name: str, version: str) -> DetectorProfile:
        """Delete a detector's profile; an empty version means the served version."""
        if not version:
            version = self._registry.get(name).config.version
        return self.store.delete(name, version)

    # ------------------------------------------------------------ detection

    def _check(self, query: DetectQuery) -> float:
        limit = self.settings.max_images_per_request
        check_request_images(len(query.images), query.ids, limit, "aigen.max_images_per_request")
        max_flip = (
            self.settings.max_flip_fraction
            if query.max_flip_fraction is None
            else query.max_flip_fraction
        )
        if not (math.isfinite(max_flip) and 0.0 <= max_flip <= 1.0):
            raise InvalidArgumentError(f"max_flip_fraction must be in [0, 1], got {max_flip}")
        return max_flip

    async def detect(self, query: DetectQuery) -> DetectResult:
        """Verdicts for every image of the query, in order."""
        max_flip = self._check(query)
        models = self.resolve(query.detectors)
        for model in models:
            if not model.ready():
                raise ModelNotReadyError(
                    f"detector {model.name!r} is not ready ({model.status()}); retry later"
                )
        loop = asyncio.get_running_loop()
        arrays = await loop.run_in_executor(
            self._pool, decode_all, list(query.images), self.max_pixels
        )
        calibrations = [await self.calibration(model) for model in models]
        results = await self.verdicts(
            models, calibrations, arrays, query.stability, max_flip, query.explain
        )
        ids = list(query.ids) or [""] * len(arrays)
        results = [_with_id(r, i) for r, i in zip(results, ids, strict=True)]
        self._record(models, results)
        return DetectResult([(m.name, m.config.version) for m in models], results)

    async def verdicts(
        self,
        models: Sequence[ServedModel],
        calibrations: Sequence[Calibration],
        images: Sequence[np.ndarray],
        stability: bool,
        max_flip_fraction: float,
        explain: bool,
    ) -> list[ImageVerdict]:
        """Verdicts for decoded RGB images (ids empty)."""
        results: list[ImageVerdict] = []
        group = STABILITY_GROUP if stability else max(1, len(images))
        for start in range(0, len(images), group):
            chunk = images[start : start + group]
            results.extend(
                await self._chunk(models, calibrations, chunk, stability, max_flip_fraction)
            )
        if explain:
            results = await self._explain(models, calibrations, images, results)
        return results

    async def _chunk(
        self,
        models: Sequence[ServedModel],
        calibrations: Sequence[Calibration],
        images: Sequence[np.ndarray],
        stability: bool,
        max_flip_fraction: float,
    ) -> list[ImageVerdict]:
        loop = asyncio.get_running_loop()
        inputs = list(images)
        names: list[str] = []
        if stability:
            copies = await loop.run_in_executor(
                self._pool, lambda: [variants(image) for image in images]
            )
            names = list(copies[0])
            inputs += [copy[name] for name in names for copy in copies]
        scored = await asyncio.gather(*(self.scorer.score(m, inputs) for m in models))
        n = len(images)
        probs = np.stack([s.probabilities for s in scored], axis=1)  # (1 + V) * n x D
        thresholds = [c.threshold for c in calibrations]
        per_detector = _log_odds(probs, thresholds)
        z, generated = decide(probs, thresholds, per_detector)
        results = []
        for i in range(n):
            detectors = [
                DetectorVerdict(
                    detector=model.name,
                    version=model.config.version,
                    probability=float(probs[i, d]),
                    threshold=float(calibrations[d].threshold),
                    calibrated=calibrations[d].calibrated,
                    log_odds=float(per_detector[i, d]),
                    generated=bool(probs[i, d] >= calibrations[d].threshold),
                    crops=scored[d].crops[i],
                )
                for d, model in enumerate(models)
            ]
            probability = float(probs[i, 0]) if len(models) == 1 else _sigmoid(float(z[i]))
            verdict: Verdict = "GENERATED" if generated[i] else "REAL"
            report = None
            notes = _notes(models, calibrations, [s.padded[i] for s in scored])
            if stability:
                usable = _scorable_variants(names, scored, i, n)
                report = _stability(usable, z, generated, i, max_flip_fraction)
                if report.flip_fraction > max_flip_fraction:
                    verdict = "UNSURE"
                notes += _skipped_note(names, usable, models)
            results.append(
                ImageVerdict("", verdict, probability, float(z[i]), detectors, report, None, notes)
            )
        return results

    async def _explain(
        self,
        models: Sequence[ServedModel],
        calibrations: Sequence[Calibration],
        images: Sequence[np.ndarray],
        results: list[ImageVerdict],
    ) -> list[ImageVerdict]:
        """Add spectral evidence from the first detector profile that has a spectrum."""
        profile = next(
            (c.profile.spectral for c in calibrations if c.profile and c.profile.spectral), None
        )
        if profile is None:
            note = "no spectral evidence: no detector profile with a real-photo spectrum"
            return [_replace(r, notes=[*r.notes, note]) for r in results]
        evidence = await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: [spectral_evidence(profile, image) for image in images]
        )
        out = []
        for result, image, found in zip(results, images, evidence, strict=True):
            notes = list(result.notes)
            if min(image.shape[:2]) < profile.crop:
                notes.append(
                    f"spectral evidence from a mirror-padded image (smaller than the "
                    f"profile's {profile.crop}-pixel crop): weak"
                )
            out.append(_replace(result, spectral=found, notes=notes))
        return out

    def _record(self, models: Sequence[ServedModel], results: Sequence[ImageVerdict]) -> None:
        metrics = models[0].observers.metrics
        for d, model in enumerate(models):
            histogram = metrics.aigen_score.labels(detector=model.name)
            for result in results:
                histogram.observe(result.detectors[d].probability)
        label = models[0].name if len(models) == 1 else "ensemble"
        for verdict in ("GENERATED", "REAL", "UNSURE"):
            count = sum(1 for r in results if r.verdict == verdict)
            if count:
                metrics.aigen_verdicts.labels(detector=label, verdict=verdict).inc(count)


def _scorable_variants(
    names: Sequence[str], scored: Sequence[DetectorScores], i: int, n: int
) -> dict[str, int]:
    """Variant name -> its row, for variants every detector saw at native resolution.

    A variant down-scaled below a detector's crop would only be seen
    reflection-padded, which is no evidence about the image; it is left out
    (unless the original was already padded: then every variant is kept).
    """
    rows = {name: n * (1 + v) + i for v, name in enumerate(names)}
    if any(s.padded[i] for s in scored):
        return rows
    return {name: row for name, row in rows.items() if not any(s.padded[row] for s in scored)}


def _skipped_note(
    names: Sequence[str], usable: dict[str, int], models: Sequence[ServedModel]
) -> list[str]:
    skipped = [name for name in names if name not in usable]
    if not skipped:
        return []
    crop = min(m.config.input.height for m in models)
    return [
        f"stability without {', '.join(skipped)}: smaller than the detector's "
        f"{crop}-pixel crop, so not evidence about the image"
    ]


def _stability(
    rows_by_name: dict[str, int],
    z: np.ndarray,
    generated: np.ndarray,
    i: int,
    max_flip_fraction: float,
) -> StabilityReport:
    """Variant decisions of image ``i`` (variant name -> row of the scored inputs)."""
    names, rows = list(rows_by_name), list(rows_by_name.values())
    if not names:
        return StabilityReport(0.0, max_flip_fraction, [])
    # stable_verdict on sigmoid(z) vs 0.5 is the ensemble rule z >= 0; one detector's
    # exact p >= t decisions are passed through ``generated`` instead.
    base = 1.0 if generated[i] else 0.0
    decisions = {
        name: 1.0 if generated[row] else 0.0 for name, row in zip(names, rows, strict=True)
    }
    checked = stable_verdict(base, decisions, 0.5, max_flip_fraction)
    variants_out = [
        VariantVerdict(name, float(z[row]), bool(generated[row]), checked.flips[name])
        for name, row in zip(names, rows, strict=True)
    ]
    return StabilityReport(checked.flip_fraction, max_flip_fraction, variants_out)


def _notes(
    models: Sequence[ServedModel], calibrations: Sequence[Calibration], padded: Sequence[bool]
) -> list[str]:
    notes = [
        f"{model.name} has no profile: raw 0.5 rule (fit one with FitDetector)"
        for model, calibration in zip(models, calibrations, strict=True)
        if not calibration.calibrated
    ]
    notes += [
        f"image is smaller than {model.name}'s {model.config.input.height}x"
        f"{model.config.input.width} crop: scored reflection-padded"
        for model, pad in zip(models, padded, strict=True)
        if pad
    ]
    return notes


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _with_id(result: ImageVerdict, image_id: str) -> ImageVerdict:
    return _replace(result, id=image_id)


def _replace(result: ImageVerdict, **changes: Any) -> ImageVerdict:
    return dataclasses.replace(result, **changes)
