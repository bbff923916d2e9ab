"""FitDetector as a job ("aigen_profile"): a calibrated threshold and a real-photo spectrum.

The labelled set is split per class with a seeded shuffle: the calibration
split sets the threshold at the target FPR on its real images
(:func:`~assay.server.aigen.calibration.fit_detector_threshold`); the held-out
split reports the FPR, TPR, AP and AUROC that threshold actually gets on
images it was not fitted on. The spectral profile is fitted on all real images.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from assay.server.aigen.calibration import fit_detector_threshold
from assay.server.aigen.datasets import LabelledSetJobs
from assay.server.aigen.profiles import DetectorProfile
from assay.server.aigen.scoring import check_detector
from assay.server.aigen.specs import AigenProfileSpec
from assay.server.aigen.spectral import SpectralProfile, fit_real_profile
from assay.server.errors import InvalidArgumentError
from assay.server.jobs.manager import JobContext
from assay.server.stats.ranking import auroc, average_precision

SPECTRAL_CROPS = (256, 128, 64, 32)
"""Spectral crop: the largest that fits inside every real image."""


def split(labels: np.ndarray, holdout_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: ``round(n_c * f)`` of each class, at least 1 each.

    At least one row of each class stays in the calibration split as well.
    """
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for value in (0, 1):
        rows = np.flatnonzero(labels == value)
        count = min(max(1, round(len(rows) * holdout_fraction)), len(rows) - 1)
        held[rng.permutation(rows)[:count]] = True
    return held


def spectral_crop(images: list[np.ndarray]) -> int:
    """The largest spectral crop inside every image (32 when they are all smaller)."""
    smallest = min(min(image.shape[:2]) for image in images)
    return next((c for c in SPECTRAL_CROPS if c <= smallest), SPECTRAL_CROPS[-1])


def fit_spectrum(real: list[np.ndarray], target_fpr: float, seed: int) -> SpectralProfile:
    """The real-photo spectral profile at the largest crop the images allow."""
    crop = spectral_crop(real)
    return fit_real_profile(real, target_fpr, 0.2, seed, crop=crop, n_bins=min(32, crop // 2))


def fit_profile(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    detector: tuple[str, str, str],
    target_fpr: float,
    holdout_fraction: float,
    seed: int,
    spectral: SpectralProfile | None,
) -> DetectorProfile:
    """Threshold on the calibration split; FPR/TPR/AP/AUROC on the held-out split."""
    held = split(labels, holdout_fraction, seed)
    fit_real = probabilities[~held & (labels == 0)]
    fit_generated = probabilities[~held & (labels == 1)]
    calibration = fit_detector_threshold(fit_real, fit_generated, target_fpr)
    t = calibration.threshold
    hold_p, hold_y = probabilities[held], labels[held]
    name, version, print_ = detector
    return DetectorProfile(
        detector=name,
        version=version,
        fingerprint=print_,
        threshold=t,
        target_fpr=target_fpr,
        calibration_fpr=calibration.achieved_fpr,
        holdout_fpr=float(np.mean(hold_p[hold_y == 0] >= t)),
        holdout_tpr=float(np.mean(hold_p[hold_y == 1] >= t)),
        holdout_ap=average_precision(hold_y, hold_p),
        holdout_auroc=auroc(hold_y, hold_p),
        real_images=int((labels == 0).sum()),
        generated_images=int((labels == 1).sum()),
        created_at=time.time(),
        spectral=spectral,
    )


PROFILE_SUMMARY_SCHEMA = "assay.aigen.profile_summary/v1"
"""What a FitDetector job's report says it is (shipped as a JSON Schema)."""


def profile_summary(profile: DetectorProfile) -> dict[str, Any]:
    """The job result: the profile's JSON, named as a summary (not the stored file's schema)."""
    return {**profile.to_json(), "schema": PROFILE_SUMMARY_SCHEMA}


class DetectorFits(LabelledSetJobs):
    """The "aigen_profile" job kind."""

    kind = "aigen_profile"
    spec_type = AigenProfileSpec

    def prepare(self, spec: AigenProfileSpec) -> int:
        """Check the detector and the labelled set; one unit."""
        check_detector(self._registry.get(spec.model, spec.version))
        data = self._open(spec)
        if min(data.counts) < 3:
            raise InvalidArgumentError(
                f"a detector profile needs at least 3 real and 3 generated images, "
                f"the dataset has {data.counts[0]} and {data.counts[1]}"
            )
        return 1

    async def run(self, context: JobContext[AigenProfileSpec]) -> dict[str, Any]:
        """Score the set, fit threshold and spectrum, store the profile."""
        spec = context.spec
        model = self._registry.get(spec.model, spec.version)
        seed = spec.seed
        data = self._open(spec)
        await context.progress(0, 1, "scoring the labelled set")
        images = await self._data.load(data.paths)
        scores = await self._detectors.scorer.score(model, images)
        await context.progress(0, 1, "fitting")
        target = spec.target_fpr
        real = [image for image, label in zip(images, data.labels, strict=True) if label == 0]
        spectral = await asyncio.get_running_loop().run_in_executor(
            self._data.pool, fit_spectrum, real, target, seed
        )
        profile = fit_profile(
            scores.probabilities,
            data.labels,
            detector=(model.name, model.config.version, await self._detectors.fingerprint(model)),
            target_fpr=target,
            holdout_fraction=spec.holdout_fraction,
            seed=seed,
            spectral=spectral,
        )
        await self._detectors.store.asave(profile)
        await context.put("profile", {"images": len(images)}, {})
        return profile_summary(profile)
