"""Verdicts from detector scores: calibrated log-odds, the ensemble rule, stability.

Per detector, the pooled probability ``p`` is compared with the detector
profile's threshold ``t`` (fitted at a target FPR on real images), or with
0.5 when the detector has no profile, in which case the result says so:
CNNDetection (Wang et al., CVPR 2020) found accuracy at 0.5 near chance for
detectors whose AP is high. Several detectors combine by the mean of their
calibrated log-odds ``logit(p) - logit(t)`` (generated iff the mean >= 0).
With stability, a verdict is UNSURE when more than ``max_flip_fraction`` of
the image's re-encoded variants change the decision.

Pure functions and records: the scores come from
:class:`~assay.server.aigen.detection.AigenDetectors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from assay.server.aigen.calibration import calibrated_log_odds
from assay.server.aigen.profiles import DetectorProfile
from assay.server.aigen.scoring import CropProbability, DetectorScores
from assay.server.aigen.spectral import SpectralEvidence
from assay.server.aigen.stability import Verdict, stable_verdict
from assay.server.models.registry import ServedModel
from assay.server.stats.softmax import sigmoid


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
class Panel:
    """The detectors judging a request, each with its calibration, in the same order."""

    models: Sequence[ServedModel]
    calibrations: Sequence[Calibration]

    @property
    def members(self) -> list[tuple[ServedModel, Calibration]]:
        """(detector, its calibration) pairs."""
        return list(zip(self.models, self.calibrations, strict=True))


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


def judge(
    panel: Panel,
    scored: Sequence[DetectorScores],
    variant_names: Sequence[str],
    max_flip_fraction: float | None,
) -> list[ImageVerdict]:
    """Verdicts (ids empty) for the ``n`` images whose scores open each detector's ``scored``.

    With ``max_flip_fraction`` (stability on), rows ``n * (1 + v) + i`` hold
    image ``i``'s variant ``variant_names[v]``; a verdict becomes UNSURE when
    more than that share of its usable variants flip the decision.
    """
    n = len(scored[0].probabilities) // (1 + len(variant_names))
    probs = np.stack([s.probabilities for s in scored], axis=1)  # (1 + V) * n x D
    thresholds = [c.threshold for c in panel.calibrations]
    per_detector = _log_odds(probs, thresholds)
    z, generated = decide(probs, thresholds, per_detector)
    results = []
    for i in range(n):
        detectors = [
            DetectorVerdict(
                detector=model.name,
                version=model.config.version,
                probability=float(probs[i, d]),
                threshold=float(calibration.threshold),
                calibrated=calibration.calibrated,
                log_odds=float(per_detector[i, d]),
                generated=bool(probs[i, d] >= calibration.threshold),
                crops=scored[d].crops[i],
            )
            for d, (model, calibration) in enumerate(panel.members)
        ]
        probability = float(probs[i, 0]) if len(panel.models) == 1 else float(sigmoid(z[i]))
        verdict: Verdict = "GENERATED" if generated[i] else "REAL"
        report = None
        notes = _notes(panel, [s.padded[i] for s in scored])
        if max_flip_fraction is not None:
            usable = _scorable_variants(variant_names, scored, i, n)
            report = _stability(usable, z, generated, i, max_flip_fraction)
            if report.flip_fraction > max_flip_fraction:
                verdict = "UNSURE"
            notes += _skipped_note(variant_names, usable, panel.models)
        results.append(
            ImageVerdict("", verdict, probability, float(z[i]), detectors, report, None, notes)
        )
    return results


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


def _notes(panel: Panel, padded: Sequence[bool]) -> list[str]:
    notes = [
        f"{model.name} has no profile: raw 0.5 rule (fit one with FitDetector)"
        for model, calibration in panel.members
        if not calibration.calibrated
    ]
    notes += [
        f"image is smaller than {model.name}'s {model.config.input.height}x"
        f"{model.config.input.width} crop: scored reflection-padded"
        for model, pad in zip(panel.models, padded, strict=True)
        if pad
    ]
    return notes
