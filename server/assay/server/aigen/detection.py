"""DetectGenerated: resolve the detectors, decode and score the images, judge them.

The decision rules (calibrated log-odds, the ensemble, stability) are pure
functions in :mod:`~assay.server.aigen.verdicts`; this module feeds them:
it picks the detectors and their calibrations (a profile bound to the
detector's fingerprint, or 0.5 without one), decodes request images on the
pool, scores them and, with stability, their re-encodings of
:mod:`~assay.server.aigen.stability`.

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

from assay.server.aigen.images import decode_all
from assay.server.aigen.profiles import DetectorProfile
from assay.server.aigen.scoring import DetectorScorer, check_detector
from assay.server.aigen.spectral import spectral_evidence
from assay.server.aigen.stability import variants
from assay.server.aigen.verdicts import Calibration, ImageVerdict, Panel, judge
from assay.server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    ModelNotReadyError,
)
from assay.server.models.config import Task
from assay.server.models.preprocess import ImageInput, check_request_images
from assay.server.models.registry import ModelRegistry, ServedModel
from assay.server.profiles import ProfileStore, Stored, fingerprint
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
class DetectResult:
    """Verdicts in request order, with the detectors that made them."""

    detectors: list[tuple[str, str]]
    results: list[ImageVerdict]


@dataclass
class AigenDetectors:
    """Served detectors, their profiles, and the DetectGenerated computation."""

    registry: ModelRegistry
    pool: Executor
    """Decodes, re-encodes and tiles images off the event loop."""
    store: ProfileStore[DetectorProfile]
    settings: AigenSettings
    max_pixels: int
    """Larger request images are refused from their header."""
    scorer: DetectorScorer = field(init=False)
    _fingerprints: dict[tuple[str, str], str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.scorer = DetectorScorer(self.pool)

    # ------------------------------------------------------------ detectors

    def resolve(self, refs: Sequence[tuple[str, str]]) -> list[ServedModel]:
        """The detectors named, else the configured defaults, else every aigen_detector."""
        if refs:
            models = [self.registry.get(name, version) for name, version in refs]
        elif self.settings.default_detectors:
            models = [self.registry.get(name) for name in self.settings.default_detectors]
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
        names = sorted({m.name for m in self.registry.all()})
        return [self.registry.get(name) for name in names]

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
        """The profile's threshold (the profile cached), or 0.5 without a profile.

        Raises:
            FailedPreconditionError: the profile was fitted on other weights or
                cannot be read.
        """
        profile = await self.store.get(model.name, model.config.version)
        if profile is None:
            return Calibration(DEFAULT_THRESHOLD, None)
        if profile.fingerprint != await self.fingerprint(model):
            raise FailedPreconditionError(
                f"the profile of detector {model.name!r} was fitted on different weights "
                "(fingerprint mismatch); refit it with FitDetector or delete it"
            )
        return Calibration(profile.threshold, profile)

    async def delete(self, name: str, version: str) -> Stored[DetectorProfile]:
        """Delete a detector's profile, readable or not; an empty version means the served one."""
        if not version:
            version = self.registry.get(name).config.version
        return await self.store.adelete(name, version)

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
            self.pool, decode_all, list(query.images), self.max_pixels
        )
        panel = Panel(models, [await self.calibration(model) for model in models])
        stability = max_flip if query.stability else None
        results = await self.verdicts(panel, arrays, stability, query.explain)
        ids = list(query.ids) or [""] * len(arrays)
        results = [_replace(r, id=i) for r, i in zip(results, ids, strict=True)]
        self._record(models, results)
        return DetectResult([(m.name, m.config.version) for m in models], results)

    async def verdicts(
        self,
        panel: Panel,
        images: Sequence[np.ndarray],
        max_flip_fraction: float | None,
        explain: bool,
    ) -> list[ImageVerdict]:
        """Verdicts for decoded RGB images (ids empty); stability when a max flip share is given."""
        results: list[ImageVerdict] = []
        group = STABILITY_GROUP if max_flip_fraction is not None else max(1, len(images))
        for start in range(0, len(images), group):
            chunk = images[start : start + group]
            results.extend(await self._chunk(panel, chunk, max_flip_fraction))
        if explain:
            results = await self._explain(panel, images, results)
        return results

    async def _chunk(
        self, panel: Panel, images: Sequence[np.ndarray], max_flip_fraction: float | None
    ) -> list[ImageVerdict]:
        inputs = list(images)
        names: list[str] = []
        if max_flip_fraction is not None:
            copies = await asyncio.get_running_loop().run_in_executor(
                self.pool, lambda: [variants(image) for image in images]
            )
            names = list(copies[0])
            inputs += [copy[name] for name in names for copy in copies]
        scored = await asyncio.gather(*(self.scorer.score(m, inputs) for m in panel.models))
        return judge(panel, scored, names, max_flip_fraction)

    async def _explain(
        self, panel: Panel, images: Sequence[np.ndarray], results: list[ImageVerdict]
    ) -> list[ImageVerdict]:
        """Add spectral evidence from the first detector profile that has a spectrum."""
        profile = next(
            (c.profile.spectral for c in panel.calibrations if c.profile and c.profile.spectral),
            None,
        )
        if profile is None:
            note = "no spectral evidence: no detector profile with a real-photo spectrum"
            return [_replace(r, notes=[*r.notes, note]) for r in results]
        evidence = await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: [spectral_evidence(profile, image) for image in images]
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


def _replace(result: ImageVerdict, **changes: Any) -> ImageVerdict:
    return dataclasses.replace(result, **changes)
