"""Percentile-bootstrap confidence intervals, and metric estimates that carry one.

Percentile bootstrap (Efron & Tibshirani, 1993, "An Introduction to the
Bootstrap", ch. 13): draw B resamples of the N rows with replacement, the same
row indices for every input array; evaluate the statistic on each resample,
θ*_1..θ*_B; the (1 - alpha) interval is [q_{alpha/2}(θ*), q_{1-alpha/2}(θ*)] with q the
empirical quantile and alpha = 1 - confidence. The point estimate is the statistic
on the original rows. With ``strata`` the rows of each stratum are resampled
within it, so every stratum keeps its size (needed for per-group statistics).

The generator is ``numpy.random.default_rng(seed)`` and resamples are drawn in a
fixed order, so a seed always gives the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from assay.server.robustness.calibration import (
    DEFAULT_BINS,
    _batched_ece,
    _bin_indices,
    _confidence_and_correct,
)
from assay.server.robustness.metrics import (
    FloatArray,
    IntArray,
    _agreements,
    _group_accuracies,
    _group_codes,
    _mismatches,
    _sequence_flip_rates,
)

__all__ = [
    "Estimate",
    "Interval",
    "bootstrap_ci",
    "ece_estimate",
    "error_rate_estimate",
    "flip_rate_estimate",
    "shift_consistency_estimate",
    "worst_group_accuracy_estimate",
]

Statistic = Callable[..., Any]
"""Maps the (resampled) arrays to a number, or with ``vectorized`` a batch of them."""
MAX_BATCH_ELEMENTS = 1 << 22
"""Upper bound on resampled elements held at once (about 32 MiB of float64)."""


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval around a point estimate."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Estimate:
    """A metric value with its percentile-bootstrap confidence interval."""

    value: float
    low: float
    high: float
    confidence: float


# ---------------------------------------------------------------- core


def _rows(arrays: tuple[npt.ArrayLike, ...]) -> list[npt.NDArray[Any]]:
    """The inputs as arrays sharing a non-zero first dimension, else ValueError."""
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    data = [np.asarray(array) for array in arrays]
    if any(array.ndim == 0 for array in data):
        raise ValueError("bootstrap inputs must be arrays with one row per sample")
    lengths = sorted({len(array) for array in data})
    if len(lengths) > 1:
        raise ValueError(f"mismatched lengths: arrays have {lengths} rows")
    if lengths[0] == 0:
        raise ValueError("cannot bootstrap empty arrays")
    return data


def _check_settings(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _strata_positions(strata: npt.ArrayLike | None, n_rows: int) -> list[IntArray] | None:
    """Row positions of each stratum, or None for plain resampling."""
    if strata is None:
        return None
    labels = np.asarray(strata)
    if labels.shape != (n_rows,):
        raise ValueError(f"strata must have one entry per row ({n_rows}), got {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    return [np.flatnonzero(codes == code) for code in range(int(codes.max()) + 1)]


def _draw(
    rng: np.random.Generator, size: int, n_rows: int, strata: list[IntArray] | None
) -> IntArray:
    """A size x n_rows array of resampled row indices (within strata when given)."""
    if strata is None:
        return rng.integers(0, n_rows, size=(size, n_rows), dtype=np.intp)
    indices = np.empty((size, n_rows), dtype=np.intp)
    for positions in strata:
        picks = rng.integers(0, positions.size, size=(size, positions.size), dtype=np.intp)
        indices[:, positions] = positions[picks]
    return indices


def _index_batches(
    rng: np.random.Generator,
    n_resamples: int,
    n_rows: int,
    row_size: int,
    strata: list[IntArray] | None,
) -> Iterator[IntArray]:
    """Resample indices in batches small enough to keep memory bounded."""
    batch = max(1, MAX_BATCH_ELEMENTS // (n_rows * max(1, row_size)))
    for start in range(0, n_resamples, batch):
        yield _draw(rng, min(batch, n_resamples - start), n_rows, strata)


def _evaluate(
    statistic: Statistic, data: list[npt.NDArray[Any]], indices: IntArray, vectorized: bool
) -> FloatArray:
    """The statistic on each row of `indices` (one resample per row)."""
    if vectorized:
        values = np.asarray(statistic(*(array[indices] for array in data)), dtype=np.float64)
        if values.shape != (indices.shape[0],):
            raise ValueError(
                f"a vectorized statistic must return one value per resample, "
                f"got shape {values.shape} for {indices.shape[0]} resamples"
            )
        return values
    return np.array(
        [float(statistic(*(array[row] for array in data))) for row in indices], dtype=np.float64
    )


def bootstrap_ci(
    statistic: Statistic,
    *arrays: npt.ArrayLike,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    vectorized: bool = False,
    strata: npt.ArrayLike | None = None,
) -> Interval:
    """Percentile-bootstrap confidence interval of ``statistic(*arrays)`` over rows.

    Args:
        statistic: Function of the arrays returning a number. With `vectorized`, it
            receives arrays with an extra leading resample axis (B x N x ...) and must
            return B values, e.g. ``lambda x: x.mean(axis=-1)``.
        *arrays: Inputs sharing their first (row) dimension; each resample picks the
            same rows from all of them.
        n_resamples: Number of bootstrap resamples B.
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling generator.
        vectorized: Whether `statistic` handles a batch of resamples at once.
        strata: Optional per-row stratum labels; rows are resampled within strata.

    Returns:
        The point estimate on the original rows and the interval bounds.

    Raises:
        ValueError: On no, empty or mismatched arrays, bad settings, or a statistic
            that returns a non-finite value.
    """
    _check_settings(n_resamples, confidence)
    data = _rows(arrays)
    n_rows = len(data[0])
    identity = np.arange(n_rows, dtype=np.intp)[None]
    estimate = float(_evaluate(statistic, data, identity, vectorized)[0])
    rng = np.random.default_rng(seed)
    row_size = sum(int(np.prod(array.shape[1:])) for array in data)
    batches = _index_batches(rng, n_resamples, n_rows, row_size, _strata_positions(strata, n_rows))
    replicates = np.concatenate([_evaluate(statistic, data, b, vectorized) for b in batches])
    if not (np.isfinite(estimate) and np.all(np.isfinite(replicates))):
        raise ValueError("the statistic returned a non-finite value")
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(estimate=estimate, low=float(low), high=float(high))


# ---------------------------------------------------------------- estimates


def _mean_of_rows(values: FloatArray) -> FloatArray:
    """Vectorized statistic: the mean of each resample (last axis)."""
    means: FloatArray = values.mean(axis=-1)
    return means


def _mean_estimate(values: FloatArray, n_resamples: int, confidence: float, seed: int) -> Estimate:
    """Bootstrap estimate of the mean of per-row values."""
    interval = bootstrap_ci(
        _mean_of_rows,
        values,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        vectorized=True,
    )
    return Estimate(interval.estimate, interval.low, interval.high, confidence)


def error_rate_estimate(
    predictions: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
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
    return _mean_estimate(_mismatches(predictions, labels), n_resamples, confidence, seed)


def shift_consistency_estimate(
    predictions_a: npt.ArrayLike,
    predictions_b: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
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
    agreements = _agreements(predictions_a, predictions_b)
    return _mean_estimate(agreements, n_resamples, confidence, seed)


def flip_rate_estimate(
    predictions: npt.ArrayLike,
    *,
    noise: bool = False,
    n_resamples: int = 1000,
    confidence: float = 0.95,
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
    per_sequence = _sequence_flip_rates(predictions, noise=noise)
    return _mean_estimate(per_sequence, n_resamples, confidence, seed)


def ece_estimate(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_bins: int = DEFAULT_BINS,
    from_logits: bool = False,
    n_resamples: int = 1000,
    confidence: float = 0.95,
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
    top_confidence, correct = _confidence_and_correct(scores, labels, from_logits)
    bins = _bin_indices(top_confidence, n_bins)

    def statistic(b: IntArray, conf: FloatArray, hit: FloatArray) -> FloatArray:
        return _batched_ece(b, conf, hit, n_bins)

    interval = bootstrap_ci(
        statistic,
        bins,
        top_confidence,
        correct,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        vectorized=True,
    )
    return Estimate(interval.estimate, interval.low, interval.high, confidence)


def worst_group_accuracy_estimate(
    predictions: npt.ArrayLike,
    labels: npt.ArrayLike,
    groups: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
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
    correct, codes, names = _group_codes(predictions, labels, groups)

    def statistic(hit: FloatArray, code: IntArray) -> FloatArray:
        worst: FloatArray = _group_accuracies(hit, code, len(names)).min(axis=1)
        return worst

    interval = bootstrap_ci(
        statistic,
        correct,
        codes,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        vectorized=True,
        strata=codes,
    )
    return Estimate(interval.estimate, interval.low, interval.high, confidence)
