"""EvaluateAigenDetector as a job ("aigen_evaluation"): report ``assay.aigen.evaluation/v1``.

Scores a labelled real/generated set once as is and once per robustness
point (JPEG re-encoding at each quality, down-scaling by each factor, as
SIDBench does), then reports overall and per-generator metrics with bootstrap
intervals. Cross-generator generalisation is the known weak spot of these
detectors, so generators are always broken out, never only pooled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from assay.server.aigen.datasets import LabelledSet, LabelledSetJobs
from assay.server.aigen.evaluation import (
    CONFIDENCE,
    binary_metrics,
    confident_mistakes,
    curves,
    histogram,
    mean_spectra,
    proportion,
    ranked,
)
from assay.server.aigen.fit_job import spectral_crop
from assay.server.aigen.scoring import check_detector
from assay.server.aigen.specs import AigenEvaluationSpec
from assay.server.aigen.stability import downscale, jpeg_roundtrip
from assay.server.aigen.verdicts import Calibration
from assay.server.jobs.manager import JobContext
from assay.server.models.registry import ServedModel
from assay.server.stats.ranking import auroc, average_precision

SCHEMA = "assay.aigen.evaluation/v1"
RESAMPLES = 1000
SMALL_GROUP = 30


class DetectorEvaluationJobs(LabelledSetJobs):
    """The "aigen_evaluation" job kind."""

    kind = "aigen_evaluation"
    spec_type = AigenEvaluationSpec

    def prepare(self, spec: AigenEvaluationSpec) -> int:
        """Check detector and set; units = the clean pass plus one per robustness point."""
        check_detector(self._registry.get(spec.model, spec.version))
        self._open(spec)
        return 1 + len(spec.jpeg_qualities) + len(spec.resize_scales)

    async def _probabilities(
        self,
        model: ServedModel,
        images: Sequence[np.ndarray],
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        if transform is not None:
            images = await asyncio.get_running_loop().run_in_executor(
                self._data.pool, lambda: [transform(image) for image in images]
            )
        return (await self._detectors.scorer.score(model, images)).probabilities

    async def run(self, context: JobContext[AigenEvaluationSpec]) -> dict[str, Any]:
        """Score clean and transformed copies; metrics, curves, spectra, report."""
        spec = context.spec
        seed = spec.seed
        model = self._registry.get(spec.model, spec.version)
        qualities, scales = spec.jpeg_qualities, spec.resize_scales
        data = self._open(spec)
        total = 1 + len(qualities) + len(scales)
        calibration = await self._detectors.calibration(model)
        threshold = calibration.threshold
        await context.progress(0, total, "scoring clean images")
        images = await self._data.load(data.paths)
        probs = await self._probabilities(model, images)
        labels = data.labels
        robustness: dict[str, list[dict[str, Any]]] = {"jpeg": [], "resize": []}
        done = 1
        for quality in qualities:
            await context.progress(done, total, f"JPEG q{quality}")
            varied = await self._probabilities(
                model, images, partial(jpeg_roundtrip, quality=quality)
            )
            robustness["jpeg"].append(
                {"param": quality, **await self._curve_point(labels, varied, threshold, seed)}
            )
            done += 1
        for scale in scales:
            await context.progress(done, total, f"down-scale {scale}")
            varied = await self._probabilities(model, images, partial(downscale, factor=scale))
            robustness["resize"].append(
                {"param": scale, **await self._curve_point(labels, varied, threshold, seed)}
            )
            done += 1
        await context.progress(done, total, "metrics")
        body = await asyncio.to_thread(
            self._summarise, model, data, images, probs, calibration, seed
        )
        return {**body, "robustness": robustness, "settings": self._settings(spec)}

    async def _curve_point(
        self, labels: np.ndarray, probs: np.ndarray, threshold: float, seed: int
    ) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            kw = {"resamples": RESAMPLES, "seed": seed}
            correct = (probs >= threshold) == (labels == 1)
            return {
                "ap": ranked(average_precision, labels, probs, **kw),
                "auroc": ranked(auroc, labels, probs, **kw),
                "accuracy_calibrated": proportion(correct, **kw),
            }

        return await asyncio.to_thread(compute)

    @staticmethod
    def _settings(spec: AigenEvaluationSpec) -> dict[str, Any]:
        return {
            "seed": spec.seed,
            "bootstrap_resamples": RESAMPLES,
            "confidence": CONFIDENCE,
            "sample_limit": spec.sample_limit,
        }

    def _summarise(
        self,
        model: ServedModel,
        data: LabelledSet,
        images: Sequence[np.ndarray],
        probs: np.ndarray,
        calibration: Calibration,
        seed: int,
    ) -> dict[str, Any]:
        labels, groups, threshold = data.labels, data.groups, calibration.threshold
        real_rows = labels == 0
        generators = []
        by_generator = {}
        for name in sorted(set(groups) - {"real"}):
            rows = real_rows | (np.asarray(groups) == name)
            y, p = labels[rows], probs[rows]
            hits = p[y == 1]
            kw = {"resamples": RESAMPLES, "seed": seed}
            generators.append(
                {
                    "name": name,
                    "count": int(hits.size),
                    "ap": ranked(average_precision, y, p, **kw),
                    "auroc": ranked(auroc, y, p, **kw),
                    "accuracy_calibrated": proportion(hits >= threshold, **kw),
                    "accuracy_at_0_5": proportion(hits >= 0.5, **kw),
                }
            )
            by_generator[name] = curves(y, p)
        source = data.dataset.source
        base = source if source.is_dir() else source.parent
        paths = [_relative(p, base) for p in data.paths]
        real_images = [image for image, r in zip(images, real_rows, strict=True) if r]
        spec = model.config.aigen
        return {
            "schema": SCHEMA,
            "created_at": time.time(),
            "detector": {
                "name": model.name,
                "version": model.config.version,
                "policy": spec.policy.value,
                "max_crops": spec.max_crops,
                "aggregation": spec.aggregation.value,
                "top_k": spec.top_k,
            },
            "dataset": str(source),
            "calibration": _calibration_json(calibration),
            "counts": {"real": int(real_rows.sum()), "generated": int((~real_rows).sum())},
            "overall": binary_metrics(labels, probs, threshold, resamples=RESAMPLES, seed=seed),
            "generators": generators,
            "curves": {**curves(labels, probs), "by_generator": by_generator},
            "histogram": histogram(probs, groups),
            "spectra": mean_spectra(images, groups, spectral_crop(real_images)),
            "examples": confident_mistakes(paths, groups, labels, probs, threshold),
            "warnings": _warnings(calibration, generators, labels, probs),
        }


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _calibration_json(calibration: Calibration) -> dict[str, Any]:
    profile = calibration.profile
    if profile is None:
        return {
            "source": "default",
            "threshold": calibration.threshold,
            "target_fpr": None,
            "note": "no detector profile: the raw 0.5 rule is used (fit one with FitDetector)",
        }
    return {
        "source": "profile",
        "threshold": calibration.threshold,
        "target_fpr": profile.target_fpr,
        "note": (
            f"threshold fitted at {profile.target_fpr:.0%} FPR on the profile's real images "
            f"(held-out FPR {profile.holdout_fpr:.1%}, AP {profile.holdout_ap:.3f})"
        ),
    }


def _warnings(
    calibration: Calibration,
    generators: Sequence[dict[str, Any]],
    labels: np.ndarray,
    probs: np.ndarray,
) -> list[str]:
    warnings = []
    if calibration.profile is None:
        warnings.append(
            "no detector profile: verdicts use the raw 0.5 threshold, which CNNDetection "
            "found near chance for detectors with high AP; fit a profile"
        )
    else:
        fpr = float(np.mean(probs[labels == 0] >= calibration.threshold))
        if fpr > 2 * calibration.profile.target_fpr + 0.02:
            warnings.append(
                f"{fpr:.1%} of this set's real images are flagged, far above the profile's "
                f"{calibration.profile.target_fpr:.0%} target: these real photos differ from "
                "the ones it was fitted on; refit on representative real images"
            )
    for g in generators:
        if g["count"] < SMALL_GROUP:
            warnings.append(f"generator {g['name']!r} has only {g['count']} images: wide intervals")
        value = g["auroc"]["value"]
        if value is not None and value < 0.6:
            warnings.append(
                f"AUROC {value:.2f} on generator {g['name']!r}: near chance, the detector does "
                "not generalise to it"
            )
    return warnings
