"""Calibration metrics: ECE, MCE, NLL, Brier score, reliability diagrams, temperature scaling.

Every function takes an N x K score array and N integer labels. Scores are
probabilities by default (rows must be non-negative and sum to 1); pass
``from_logits=True`` for raw logits, which are turned into probabilities with a
numerically stable softmax.

Formulas and sources (p̂_i = max_k p_ik is the confidence, ŷ_i = argmax_k p_ik):

* Bins: M equal-width confidence bins, B_m = {i : p̂_i ∈ ((m-1)/M, m/M]}, M = 15
  by default (Naeini et al., 2015, "Obtaining Well Calibrated Probabilities Using
  Bayesian Binning", AAAI; Guo et al., 2017, "On Calibration of Modern Neural
  Networks", ICML, Sec. 2). acc(B_m) = mean 1[ŷ_i = y_i], conf(B_m) = mean p̂_i.
* ECE = Σ_m (|B_m| / N) |acc(B_m) - conf(B_m)| (L1 gap; Guo et al. eq. 3).
* MCE = max_{m: B_m ≠ ∅} |acc(B_m) - conf(B_m)| (Guo et al. eq. 5).
* NLL = -(1/N) Σ_i log p_{i, y_i} (Guo et al. Sec. 2).
* Brier score, multi-class = (1/N) Σ_i Σ_k (p_ik - 1[k = y_i])² (Brier, 1950,
  "Verification of Forecasts Expressed in Terms of Probability").
* Temperature scaling: p_i = softmax(z_i / T) with T > 0 minimizing the NLL on
  held-out logits (Guo et al. Sec. 4.2); fitted as a bounded 1-D search on log T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar

from assay.server.stats.arrays import FloatArray, IntArray
from assay.server.stats.bincount import batched_bincount
from assay.server.stats.softmax import log_softmax, softmax

__all__ = [
    "DEFAULT_BINS",
    "ReliabilityBin",
    "TemperatureFit",
    "batched_ece",
    "bin_indices",
    "brier_score",
    "confidence_and_correct",
    "expected_calibration_error",
    "fit_temperature",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
]

DEFAULT_BINS = 15
"""Guo et al.'s number of equal-width confidence bins."""
PROBABILITY_TOLERANCE = 1e-4
"""How far a probability row's sum may stray from 1 (float32 softmax outputs)."""
TEMPERATURE_BOUNDS = (1e-2, 1e2)
"""Search interval for the fitted temperature."""


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram, covering confidences in (lower, upper]."""

    lower: float
    upper: float
    count: int
    mean_confidence: float
    """Mean top-1 confidence of the bin's samples; NaN for an empty bin."""
    accuracy: float
    """Top-1 accuracy of the bin's samples; NaN for an empty bin."""


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and what it does to NLL and ECE."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


# ---------------------------------------------------------------- inputs


def _as_scores(scores: npt.ArrayLike) -> FloatArray:
    """An N x K finite float array with N, K ≥ 1, else ValueError."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"scores must be N x K (2-D), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"scores are empty: shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("scores contain NaN or infinite values")
    return array


def _check_probabilities(probs: FloatArray) -> None:
    """Raise ValueError unless every row is a probability distribution."""
    if np.any(probs < 0.0):
        raise ValueError("probabilities must be non-negative; pass from_logits=True for logits")
    worst = float(np.abs(probs.sum(axis=1) - 1.0).max())
    if worst > PROBABILITY_TOLERANCE:
        raise ValueError(
            f"probabilities must sum to 1 per row (largest deviation {worst:.3g}); "
            "pass from_logits=True for logits"
        )


def _as_labels(labels: npt.ArrayLike, n_samples: int, n_classes: int) -> IntArray:
    """N integer labels in [0, K), else ValueError."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {array.dtype}")
    if array.size != n_samples:
        raise ValueError(f"mismatched lengths: scores={n_samples}, labels={array.size}")
    if array.min() < 0 or array.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}) for {n_classes} classes")
    return array.astype(np.intp)


def _inputs(
    scores: npt.ArrayLike, labels: npt.ArrayLike, from_logits: bool
) -> tuple[FloatArray, IntArray]:
    """Validated probabilities (softmaxed when `from_logits`) and labels."""
    array = _as_scores(scores)
    if from_logits:
        array = softmax(array)
    else:
        _check_probabilities(array)
    return array, _as_labels(labels, array.shape[0], array.shape[1])


def confidence_and_correct(
    scores: npt.ArrayLike, labels: npt.ArrayLike, from_logits: bool
) -> tuple[FloatArray, FloatArray]:
    """Per-sample top-1 confidence p̂_i and correctness 1[ŷ_i = y_i]."""
    probs, truth = _inputs(scores, labels, from_logits)
    predicted = probs.argmax(axis=1)
    return probs.max(axis=1), (predicted == truth).astype(np.float64)


# ---------------------------------------------------------------- binning


def _bin_edges(n_bins: int) -> FloatArray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    return np.linspace(0.0, 1.0, n_bins + 1)


def bin_indices(confidence: FloatArray, n_bins: int) -> IntArray:
    """Bin m (0-based) of each confidence, bins being (edge_m, edge_{m+1}]; 0 goes to bin 0."""
    edges = _bin_edges(n_bins)
    indices = np.searchsorted(edges, confidence, side="left") - 1
    return np.clip(indices, 0, n_bins - 1).astype(np.intp)


def _binned_sums(
    bins: IntArray, confidence: FloatArray, correct: FloatArray, n_bins: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-bin counts, confidence sums and correct counts; B x n inputs give B x M outputs."""
    counts = batched_bincount(bins, n_bins)
    confidence_sums = batched_bincount(bins, n_bins, confidence)
    correct_sums = batched_bincount(bins, n_bins, correct)
    return counts, confidence_sums, correct_sums


def batched_ece(
    bins: IntArray, confidence: FloatArray, correct: FloatArray, n_bins: int
) -> FloatArray:
    """ECE of each row of B x n arrays: Σ_m |Σ_{B_m} correct - Σ_{B_m} p̂| / n."""
    _, confidence_sums, correct_sums = _binned_sums(bins, confidence, correct, n_bins)
    ece: FloatArray = np.abs(correct_sums - confidence_sums).sum(axis=1) / bins.shape[1]
    return ece


# ---------------------------------------------------------------- metrics


def reliability_diagram(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_bins: int = DEFAULT_BINS,
    from_logits: bool = False,
) -> tuple[ReliabilityBin, ...]:
    """Reliability-diagram data: per equal-width bin, its edges, count, conf(B_m), acc(B_m).

    Args:
        scores: N x K probabilities (or logits with `from_logits`).
        labels: N integer labels in [0, K).
        n_bins: Number of equal-width bins on [0, 1].
        from_logits: Apply softmax to `scores` first.

    Returns:
        `n_bins` bins in increasing confidence; counts sum to N.

    Raises:
        ValueError: On malformed scores or labels, or n_bins < 1.
    """
    confidence, correct = confidence_and_correct(scores, labels, from_logits)
    edges = _bin_edges(n_bins)
    bins = bin_indices(confidence, n_bins)
    counts, confidence_sums, correct_sums = (
        row[0] for row in _binned_sums(bins[None], confidence[None], correct[None], n_bins)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = confidence_sums / counts
        accuracy = correct_sums / counts
    return tuple(
        ReliabilityBin(
            lower=float(edges[m]),
            upper=float(edges[m + 1]),
            count=int(counts[m]),
            mean_confidence=float(mean_confidence[m]),
            accuracy=float(accuracy[m]),
        )
        for m in range(n_bins)
    )


def expected_calibration_error(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_bins: int = DEFAULT_BINS,
    from_logits: bool = False,
) -> float:
    """ECE = Σ_m (|B_m| / N) |acc(B_m) - conf(B_m)| over equal-width bins (Guo et al. 2017).

    Args:
        scores: N x K probabilities (or logits with `from_logits`).
        labels: N integer labels in [0, K).
        n_bins: Number of equal-width bins on [0, 1].
        from_logits: Apply softmax to `scores` first.

    Returns:
        ECE as a fraction in [0, 1].

    Raises:
        ValueError: On malformed scores or labels, or n_bins < 1.
    """
    confidence, correct = confidence_and_correct(scores, labels, from_logits)
    bins = bin_indices(confidence, n_bins)
    return float(batched_ece(bins[None], confidence[None], correct[None], n_bins)[0])


def maximum_calibration_error(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_bins: int = DEFAULT_BINS,
    from_logits: bool = False,
) -> float:
    """MCE = max over non-empty bins of |acc(B_m) - conf(B_m)| (Guo et al. 2017).

    Args:
        scores: N x K probabilities (or logits with `from_logits`).
        labels: N integer labels in [0, K).
        n_bins: Number of equal-width bins on [0, 1].
        from_logits: Apply softmax to `scores` first.

    Returns:
        MCE as a fraction in [0, 1].

    Raises:
        ValueError: On malformed scores or labels, or n_bins < 1.
    """
    diagram = reliability_diagram(scores, labels, n_bins=n_bins, from_logits=from_logits)
    return max(abs(b.accuracy - b.mean_confidence) for b in diagram if b.count > 0)


def negative_log_likelihood(
    scores: npt.ArrayLike, labels: npt.ArrayLike, *, from_logits: bool = False
) -> float:
    """NLL = -(1/N) Σ_i log p_{i, y_i}.

    Probabilities are clipped to [ε, 1] with ε the float64 machine epsilon (as
    scikit-learn's `log_loss` does) so a zero probability gives a large finite loss;
    with `from_logits` the log-softmax is used directly, without clipping.

    Args:
        scores: N x K probabilities (or logits with `from_logits`).
        labels: N integer labels in [0, K).
        from_logits: Treat `scores` as logits.

    Returns:
        The mean negative log-likelihood in nats.

    Raises:
        ValueError: On malformed scores or labels.
    """
    array = _as_scores(scores)
    if from_logits:
        log_probs = log_softmax(array)
    else:
        _check_probabilities(array)
        log_probs = np.log(np.clip(array, np.finfo(np.float64).eps, 1.0))
    truth = _as_labels(labels, array.shape[0], array.shape[1])
    return float(-log_probs[np.arange(truth.size), truth].mean())


def brier_score(
    scores: npt.ArrayLike, labels: npt.ArrayLike, *, from_logits: bool = False
) -> float:
    """Multi-class Brier score (1/N) Σ_i Σ_k (p_ik - 1[k = y_i])² (Brier 1950).

    Args:
        scores: N x K probabilities (or logits with `from_logits`).
        labels: N integer labels in [0, K).
        from_logits: Apply softmax to `scores` first.

    Returns:
        The score, in [0, 2].

    Raises:
        ValueError: On malformed scores or labels.
    """
    probs, truth = _inputs(scores, labels, from_logits)
    residual = probs.copy()
    residual[np.arange(truth.size), truth] -= 1.0
    return float((residual**2).sum(axis=1).mean())


def _scaled_nll(logits: FloatArray, labels: IntArray, temperature: float) -> float:
    """NLL of softmax(logits / T) on validated inputs, with one N x K scratch array."""
    scaled = logits / temperature
    true_logit = scaled[np.arange(labels.size), labels]
    row_max = scaled.max(axis=1)
    scaled -= row_max[:, None]
    np.exp(scaled, out=scaled)
    log_partition = row_max + np.log(scaled.sum(axis=1))
    return float((log_partition - true_logit).mean())


def fit_temperature(
    logits: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = DEFAULT_BINS
) -> TemperatureFit:
    """Temperature scaling: T = argmin_{T > 0} NLL(softmax(z / T)) (Guo et al. 2017, Sec. 4.2).

    The search is a bounded scalar minimization over log T in
    [log 0.01, log 100], so T stays positive and large and small temperatures
    are searched alike, to |Δ log T| ≤ 1e-4 (0.01% in T). When the optimum lies
    outside (e.g. logits that carry no information), the nearest bound is
    returned. Log-probabilities are valid logits too.

    Args:
        logits: N x K logits of a held-out set.
        labels: N integer labels in [0, K).
        n_bins: Bins for the before/after ECE.

    Returns:
        The temperature with NLL and ECE before and after dividing the logits by it.

    Raises:
        ValueError: On malformed logits or labels.
    """
    z = _as_scores(logits)
    truth = _as_labels(labels, z.shape[0], z.shape[1])

    def nll_at(log_t: float) -> float:
        return _scaled_nll(z, truth, float(np.exp(log_t)))

    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        nll_at, bounds=(float(low), float(high)), method="bounded", options={"xatol": 1e-4}
    )
    temperature = float(np.exp(result.x))
    return TemperatureFit(
        temperature=temperature,
        nll_before=nll_at(0.0),
        nll_after=nll_at(float(result.x)),
        ece_before=expected_calibration_error(z, truth, n_bins=n_bins, from_logits=True),
        ece_after=expected_calibration_error(
            z / temperature, truth, n_bins=n_bins, from_logits=True
        ),
    )
