"""Percentile-bootstrap confidence intervals: paired over arrays, optionally stratified.

Percentile bootstrap (Efron & Tibshirani, 1993, "An Introduction to the
Bootstrap", ch. 13): draw B resamples of the N rows with replacement, the same
row indices for every input array (a paired bootstrap: a model and its
baseline, or labels and scores, stay matched); evaluate the statistic on each
resample, θ*_1..θ*_B; the (1 - alpha) interval is [q_{alpha/2}(θ*),
q_{1-alpha/2}(θ*)] with q numpy's default (linear) empirical quantile and
alpha = 1 - confidence. The point estimate is the statistic on the original
rows. With ``strata`` the rows of each stratum are resampled within it, so every
stratum keeps its size and positions (needed for per-group and two-class
statistics such as worst-group accuracy or AUROC).

The generator is ``numpy.random.default_rng(seed)``; resamples are drawn in
batches of at most `MAX_BATCH_ELEMENTS` elements, each batch one
``integers(0, n, size=(b, n))`` call (per stratum, in sorted stratum order),
so a seed always gives the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from assay.server.stats.arrays import FloatArray, IntArray
from assay.server.stats.estimate import DEFAULT_CONFIDENCE, Estimate

__all__ = [
    "MAX_BATCH_ELEMENTS",
    "Interval",
    "Statistic",
    "bootstrap_ci",
    "bootstrap_estimate",
    "mean_estimate",
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
    confidence: float = DEFAULT_CONFIDENCE,
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


def bootstrap_estimate(
    statistic: Statistic,
    *arrays: npt.ArrayLike,
    n_resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    vectorized: bool = False,
    strata: npt.ArrayLike | None = None,
) -> Estimate:
    """`bootstrap_ci` as an `Estimate` that records the confidence it used.

    Args:
        statistic: As for `bootstrap_ci`.
        *arrays: As for `bootstrap_ci`.
        n_resamples: Number of bootstrap resamples B.
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling generator.
        vectorized: Whether `statistic` handles a batch of resamples at once.
        strata: Optional per-row stratum labels; rows are resampled within strata.

    Returns:
        The estimate and its interval.
    """
    interval = bootstrap_ci(
        statistic,
        *arrays,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        vectorized=vectorized,
        strata=strata,
    )
    return Estimate(interval.estimate, interval.low, interval.high, confidence)


def _mean_of_rows(values: FloatArray) -> FloatArray:
    """Vectorized statistic: the mean of each resample over every non-resample axis."""
    means: FloatArray = values.reshape(values.shape[0], -1).mean(axis=-1)
    return means


def mean_estimate(
    values: npt.ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """The mean of per-row values (over rows and any further axes) with its interval.

    Args:
        values: N rows (e.g. per-image errors), optionally with more axes per row.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval.
        seed: Seed of the resampling generator.

    Returns:
        The mean and its interval over rows.
    """
    return bootstrap_estimate(
        _mean_of_rows,
        np.asarray(values, dtype=np.float64),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        vectorized=True,
    )
