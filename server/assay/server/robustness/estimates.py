"""Robustness metrics with percentile-bootstrap intervals (`Estimate`s).

Each function is its metric in :mod:`~assay.server.robustness.metrics` or
:mod:`~assay.server.robustness.calibration` with an interval from the shared
bootstrap (:mod:`~assay.server.stats.bootstrap`): per-sample values are
resampled over samples (images), flip rates over sequences (not frames), and
worst-group accuracy within groups, so no resample loses a group.
"""

from __future__ import annotations

import numpy.typing as npt

from assay.server.robustness.calibration import (
    DEFAULT_BINS,
    batched_ece,
    bin_indices,
    confidence_and_correct,
)
from assay.server.robustness.metrics import (
    agreements,
    group_accuracies,
    group_codes,
    mismatches,
    sequence_flip_rates,
)
from assay.server.stats.arrays import FloatArray, IntArray
from assay.server.stats.bootstrap import bootstrap_estimate, mean_estimate
from assay.server.stats.estimate import DEFAULT_CONFIDENCE, Estimate

__all__ = [
    "ece_estimate",
    "error_rate_estimate",
    "flip_rate_estimate",
    "shift_consistency_estimate",
    "worst_group_accuracy_estimate",
]


def error_rate_estimate(
    predictions: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """`metrics.error_rate` with a bootstrap interval over samples.

    Args:
        predictions: N predicted class ids.
        labels: N true class ids.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling generator.

    Returns:
        The error rate and its interval.
    """
    wrong = mismatches(predictions, labels)
    return mean_estimate(wrong, n_resamples=n_resamples, confidence=confidence, seed=seed)


def shift_consistency_estimate(
    predictions_a: npt.ArrayLike,
    predictions_b: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """`metrics.shift_consistency` with a bootstrap interval over images.

    Args:
        predictions_a: N predictions under the first shift.
        predictions_b: N predictions under the second shift.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling generator.

    Returns:
        The consistency and its interval.
    """
    agree = agreements(predictions_a, predictions_b)
    return mean_estimate(agree, n_resamples=n_resamples, confidence=confidence, seed=seed)


def flip_rate_estimate(
    predictions: npt.ArrayLike,
    *,
    noise: bool = False,
    n_resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """`metrics.flip_rate` with a bootstrap interval over sequences (not frames).

    Args:
        predictions: N x T predictions, one row per perturbation sequence.
        noise: Compare every frame with the first (noise sequences).
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling generator.

    Returns:
        The flip probability and its interval.
    """
    per_sequence = sequence_flip_rates(predictions, noise=noise)
    return mean_estimate(per_sequence, n_resamples=n_resamples, confidence=confidence, seed=seed)


def ece_estimate(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_bins: int = DEFAULT_BINS,
    from_logits: bool = False,
    n_resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """`calibration.expected_calibration_error` with a bootstrap interval over samples.

    Args:
        scores: N x K probabilities (or logits with `from_logits`).
        labels: N integer labels.
        n_bins: Number of equal-width confidence bins.
        from_logits: Apply softmax to `scores` first.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling generator.

    Returns:
        The ECE and its interval.
    """
    top_confidence, correct = confidence_and_correct(scores, labels, from_logits)
    bins = bin_indices(top_confidence, n_bins)

    def statistic(b: IntArray, conf: FloatArray, hit: FloatArray) -> FloatArray:
        return batched_ece(b, conf, hit, n_bins)

    return bootstrap_estimate(
        statistic,
        bins,
        top_confidence,
        correct,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        vectorized=True,
    )


def worst_group_accuracy_estimate(
    predictions: npt.ArrayLike,
    labels: npt.ArrayLike,
    groups: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """`metrics.worst_group_accuracy` with a bootstrap interval, resampled within groups.

    Resampling within each group keeps every group's size fixed, so no resample
    loses a group (which would bias the minimum upwards).

    Args:
        predictions: N predicted class ids.
        labels: N true class ids.
        groups: N group ids.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling generator.

    Returns:
        The worst-group accuracy and its interval.
    """
    correct, codes, names = group_codes(predictions, labels, groups)

    def statistic(hit: FloatArray, code: IntArray) -> FloatArray:
        worst: FloatArray = group_accuracies(hit, code, len(names)).min(axis=1)
        return worst

    return bootstrap_estimate(
        statistic,
        correct,
        codes,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        vectorized=True,
        strata=codes,
    )
