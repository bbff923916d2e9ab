"""Robustness metrics: error rate, corruption errors, flip rate, shift consistency, subgroups.

(Over 500 lines: half of it is the cited formulas and the published AlexNet table,
kept beside the five metric families they define.)

Pure numpy on plain arrays; every function validates its input and raises
`ValueError` with a readable message. All rates are fractions in [0, 1]
(multiplying by 100 for percentages is the caller's business).

Formulas and sources:

* Error rate: ``E = (1/N) Σ_i 1[ŷ_i ≠ y_i]``.
* Corruption error (Hendrycks & Dietterich, 2019, "Benchmarking Neural Network
  Robustness to Common Corruptions and Perturbations", ICLR, Sec. 4 "ImageNet-C"):
  ``CE_c = Σ_s E_{s,c} / Σ_s E^base_{s,c}``, mCE = mean over corruptions c.
* Relative corruption error (same paper):
  ``rCE_c = Σ_s (E_{s,c} - E_clean) / Σ_s (E^base_{s,c} - E^base_clean)``,
  relative mCE = mean over corruptions c.
* Flip probability (same paper, Sec. 4 "ImageNet-P"), for sequences of T frames:
  ``FP = mean over sequences and t = 2..T of 1[ŷ_t ≠ ŷ_{t-1}]``; for noise
  sequences every frame is compared with the first: ``1[ŷ_t ≠ ŷ_1]``.
  ``FR_p = FP_p / FP^base_p`` and mFR = mean over perturbation types p.
* Shift consistency (Zhang, 2019, "Making Convolutional Networks Shift-Invariant
  Again", ICML, Sec. 4): ``P(ŷ(shift_1(x)) = ŷ(shift_2(x)))`` over random
  shift pairs, estimated as the fraction of images whose two predictions agree.
* Subgroups (worst-group accuracy as in Sagawa et al., 2020, "Distributionally
  Robust Neural Networks"): ``acc_g = mean_{i: g_i = g} 1[ŷ_i = y_i]``,
  worst = min_g acc_g, spread = max_g acc_g - min_g acc_g.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from assay.server.stats.arrays import FloatArray, IntArray
from assay.server.stats.bincount import batched_bincount

__all__ = [
    "ALEXNET_CLEAN_ERROR",
    "ALEXNET_ERRORS",
    "CorruptionSummary",
    "SubgroupAccuracy",
    "agreements",
    "corruption_error",
    "corruption_summary",
    "error_rate",
    "flip_rate",
    "group_accuracies",
    "group_codes",
    "mean_corruption_error",
    "mean_flip_rate",
    "mismatches",
    "relative_corruption_error",
    "relative_mean_corruption_error",
    "sequence_flip_rates",
    "shift_consistency",
    "subgroup_accuracy",
    "worst_group_accuracy",
]

ErrorCurve = Sequence[float] | npt.ArrayLike
"""Top-1 error rates of one corruption, one per severity (severity 1 first)."""

ALEXNET_ERRORS: Final[Mapping[str, tuple[float, float, float, float, float]]] = MappingProxyType({
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
})  # fmt: skip
"""AlexNet top-1 error on ImageNet-C, per corruption, severities 1..5.

The default baseline for ImageNet-1k models on the standard 15-corruption suite
(Hendrycks & Dietterich, 2019). Each entry is a count of errors out of the
50,000 ImageNet validation images, and each row's mean equals the per-corruption
AlexNet average published with the ImageNet-C benchmark code (gaussian_noise
0.886428, shot_noise 0.894468, impulse_noise 0.922640, defocus_blur 0.819880,
glass_blur 0.826268, motion_blur 0.785948, zoom_blur 0.798360, snow 0.866816,
frost 0.826572, fog 0.819324, brightness 0.564592, contrast 0.853204,
elastic_transform 0.646056, pixelate 0.717840, jpeg_compression 0.606500);
the unit tests check both properties.
"""

ALEXNET_CLEAN_ERROR: Final[float] = 0.4348
"""AlexNet top-1 error on clean ImageNet validation images (43.48%)."""


# ---------------------------------------------------------------- validation


def _as_vector(values: npt.ArrayLike, name: str) -> npt.NDArray[np.generic]:
    """`values` as a non-empty 1-D array, else ValueError naming `name`."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def _require_same_length(**arrays: npt.NDArray[np.generic]) -> None:
    """Raise ValueError unless every array has the same first dimension."""
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"mismatched lengths: {listed}")


def _as_rate(value: float, name: str) -> float:
    """`value` as a float in [0, 1], else ValueError."""
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be an error rate in [0, 1], got {rate}")
    return rate


def _as_error_curve(values: ErrorCurve, name: str) -> FloatArray:
    """Per-severity error rates as a float array, each in [0, 1]."""
    curve = _as_vector(values, name).astype(np.float64)
    if not np.all((curve >= 0.0) & (curve <= 1.0)):
        raise ValueError(f"{name} must hold error rates in [0, 1], got {curve.tolist()}")
    return curve


def _paired_curves(model: ErrorCurve, baseline: ErrorCurve) -> tuple[FloatArray, FloatArray]:
    """Model and baseline error curves, validated to have one entry per same severity."""
    model_curve = _as_error_curve(model, "model errors")
    baseline_curve = _as_error_curve(baseline, "baseline errors")
    _require_same_length(model_errors=model_curve, baseline_errors=baseline_curve)
    return model_curve, baseline_curve


# ---------------------------------------------------------------- error rate


def mismatches(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    """1.0 where prediction and label differ, per sample."""
    preds = _as_vector(predictions, "predictions")
    truth = _as_vector(labels, "labels")
    _require_same_length(predictions=preds, labels=truth)
    wrong: npt.NDArray[np.bool_] = preds != truth
    return wrong.astype(np.float64)


def error_rate(predictions: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Top-1 error rate ``E = (1/N) Σ_i 1[ŷ_i ≠ y_i]``.

    Args:
        predictions: N predicted class ids (any comparable dtype).
        labels: N true class ids.

    Returns:
        The fraction of mispredicted samples, in [0, 1].

    Raises:
        ValueError: If the inputs are empty, not 1-D or of different lengths.
    """
    return float(mismatches(predictions, labels).mean())


# ---------------------------------------------------------- corruption error


def corruption_error(
    model_errors_by_severity: ErrorCurve, baseline_errors_by_severity: ErrorCurve
) -> float:
    """Corruption error ``CE_c = Σ_s E_{s,c} / Σ_s E^base_{s,c}`` (Hendrycks & Dietterich 2019).

    Args:
        model_errors_by_severity: The model's error rate at each severity of one corruption.
        baseline_errors_by_severity: The baseline's error rates at the same severities.

    Returns:
        CE as a fraction (1.0 = as bad as the baseline).

    Raises:
        ValueError: On empty or mismatched curves, rates outside [0, 1], or a baseline
            that never errs (zero denominator).
    """
    model, baseline = _paired_curves(model_errors_by_severity, baseline_errors_by_severity)
    denominator = float(baseline.sum())
    if denominator <= 0.0:
        raise ValueError("corruption error undefined: the baseline's errors sum to zero")
    return float(model.sum()) / denominator


def relative_corruption_error(
    model_errors_by_severity: ErrorCurve,
    baseline_errors_by_severity: ErrorCurve,
    model_clean_error: float,
    baseline_clean_error: float,
) -> float:
    """Relative CE ``Σ_s (E_{s,c} - E_clean) / Σ_s (E^base_{s,c} - E^base_clean)``.

    Source: Hendrycks & Dietterich 2019, Sec. 4 (relative mCE).

    Args:
        model_errors_by_severity: The model's error rate at each severity of one corruption.
        baseline_errors_by_severity: The baseline's error rates at the same severities.
        model_clean_error: The model's error rate on clean data.
        baseline_clean_error: The baseline's error rate on clean data.

    Returns:
        Relative CE as a fraction.

    Raises:
        ValueError: On invalid curves, or when the baseline does not degrade under the
            corruption (denominator ≤ 0), which leaves the ratio meaningless.
    """
    model, baseline = _paired_curves(model_errors_by_severity, baseline_errors_by_severity)
    model_clean = _as_rate(model_clean_error, "model clean error")
    baseline_clean = _as_rate(baseline_clean_error, "baseline clean error")
    denominator = float((baseline - baseline_clean).sum())
    if denominator <= 0.0:
        raise ValueError(
            "relative corruption error undefined: the baseline's corrupted errors do not "
            f"exceed its clean error (Σ_s (E_base - E_base_clean) = {denominator:.6g})"
        )
    return float((model - model_clean).sum()) / denominator


def _baseline_curve(baseline: Mapping[str, ErrorCurve], corruption: str) -> ErrorCurve:
    """The baseline's curve for `corruption`, or a ValueError listing what it covers."""
    if corruption not in baseline:
        known = ", ".join(sorted(baseline))
        raise ValueError(f"baseline has no errors for corruption {corruption!r}; it has: {known}")
    return baseline[corruption]


def _require_corruptions(model_errors: Mapping[str, ErrorCurve]) -> None:
    if not model_errors:
        raise ValueError("no corruptions given: model errors are empty")


def mean_corruption_error(
    model_errors: Mapping[str, ErrorCurve], baseline_errors: Mapping[str, ErrorCurve]
) -> float:
    """mCE: the mean of `corruption_error` over the model's corruptions.

    Args:
        model_errors: Corruption name -> the model's per-severity error rates.
        baseline_errors: Corruption name -> the baseline's per-severity error rates
            (must cover every corruption in `model_errors`), e.g. `ALEXNET_ERRORS`.

    Returns:
        mCE as a fraction.

    Raises:
        ValueError: On no corruptions, a corruption missing from the baseline, or any
            `corruption_error` failure.
    """
    _require_corruptions(model_errors)
    return float(
        np.mean(
            [
                corruption_error(curve, _baseline_curve(baseline_errors, name))
                for name, curve in model_errors.items()
            ]
        )
    )


def relative_mean_corruption_error(
    model_errors: Mapping[str, ErrorCurve],
    baseline_errors: Mapping[str, ErrorCurve],
    model_clean_error: float,
    baseline_clean_error: float,
) -> float:
    """Relative mCE: the mean of `relative_corruption_error` over the model's corruptions.

    Args:
        model_errors: Corruption name -> the model's per-severity error rates.
        baseline_errors: Corruption name -> the baseline's per-severity error rates.
        model_clean_error: The model's clean error rate.
        baseline_clean_error: The baseline's clean error rate.

    Returns:
        Relative mCE as a fraction.

    Raises:
        ValueError: As for `mean_corruption_error` and `relative_corruption_error`.
    """
    _require_corruptions(model_errors)
    return float(
        np.mean(
            [
                relative_corruption_error(
                    curve,
                    _baseline_curve(baseline_errors, name),
                    model_clean_error,
                    baseline_clean_error,
                )
                for name, curve in model_errors.items()
            ]
        )
    )


@dataclass(frozen=True)
class CorruptionSummary:
    """ImageNet-C scores of one model against one baseline (all fractions)."""

    corruption_errors: Mapping[str, float]
    """Corruption name -> CE."""
    relative_corruption_errors: Mapping[str, float]
    """Corruption name -> relative CE."""
    mce: float
    relative_mce: float
    baseline: str
    """"alexnet" for the built-in table, else the caller's name for its baseline."""


def corruption_summary(
    model_errors: Mapping[str, ErrorCurve],
    model_clean_error: float,
    baseline_errors: Mapping[str, ErrorCurve] | None = None,
    baseline_clean_error: float | None = None,
    *,
    baseline_name: str = "custom",
) -> CorruptionSummary:
    """CE and relative CE per corruption, mCE and relative mCE, in one record.

    Args:
        model_errors: Corruption name -> the model's per-severity error rates.
        model_clean_error: The model's clean error rate.
        baseline_errors: The baseline's per-severity errors; None for AlexNet
            (`ALEXNET_ERRORS`, valid for ImageNet-1k models on the 15 standard corruptions).
        baseline_clean_error: The baseline's clean error; required with `baseline_errors`,
            `ALEXNET_CLEAN_ERROR` when the baseline is AlexNet.
        baseline_name: Recorded in the summary for a custom baseline.

    Returns:
        The summary.

    Raises:
        ValueError: On a custom baseline without its clean error, or any metric failure.
    """
    if baseline_errors is None:
        baseline_errors, baseline_name = ALEXNET_ERRORS, "alexnet"
        if baseline_clean_error is None:
            baseline_clean_error = ALEXNET_CLEAN_ERROR
    if baseline_clean_error is None:
        raise ValueError("a custom baseline needs its clean error (baseline_clean_error)")
    _require_corruptions(model_errors)
    ce = {
        name: corruption_error(curve, _baseline_curve(baseline_errors, name))
        for name, curve in model_errors.items()
    }
    rce = {
        name: relative_corruption_error(
            curve, baseline_errors[name], model_clean_error, baseline_clean_error
        )
        for name, curve in model_errors.items()
    }
    return CorruptionSummary(
        corruption_errors=ce,
        relative_corruption_errors=rce,
        mce=float(np.mean(list(ce.values()))),
        relative_mce=float(np.mean(list(rce.values()))),
        baseline=baseline_name,
    )


# ----------------------------------------------------------------- flip rate


def sequence_flip_rates(predictions: npt.ArrayLike, *, noise: bool) -> FloatArray:
    """Per-sequence flip probability of an N x T prediction array (see `flip_rate`)."""
    preds = np.asarray(predictions)
    if preds.ndim != 2:
        raise ValueError(f"predictions must be N sequences x T frames (2-D), got {preds.shape}")
    if preds.shape[0] == 0:
        raise ValueError("predictions are empty: no sequences")
    if preds.shape[1] < 2:
        raise ValueError(f"each sequence needs at least 2 frames, got {preds.shape[1]}")
    reference = preds[:, :1] if noise else preds[:, :-1]
    flips: npt.NDArray[np.bool_] = preds[:, 1:] != reference
    rates: FloatArray = flips.mean(axis=1, dtype=np.float64)
    return rates


def flip_rate(predictions: npt.ArrayLike, *, noise: bool = False) -> float:
    """ImageNet-P flip probability FP (Hendrycks & Dietterich 2019, Sec. 4).

    ``FP = (1 / (N (T-1))) Σ_i Σ_{t=2..T} 1[ŷ_{i,t} ≠ ŷ_{i,t-1}]``; with
    ``noise=True`` the reference is the first frame, ``1[ŷ_{i,t} ≠ ŷ_{i,1}]``, as
    noise sequences are independent draws rather than a gradual change.

    Args:
        predictions: N x T top-1 predictions, one row per perturbation sequence.
        noise: Compare every frame with the first instead of with its predecessor.

    Returns:
        The flip probability, in [0, 1].

    Raises:
        ValueError: If the array is not 2-D, has no sequences, or fewer than 2 frames.
    """
    return float(sequence_flip_rates(predictions, noise=noise).mean())


def mean_flip_rate(
    flip_rates: Mapping[str, float], baseline_flip_rates: Mapping[str, float] | None = None
) -> float:
    """Mean flip rate over perturbation types, optionally baseline-normalized (mFR).

    Without a baseline: ``mean_p FP_p``. With one: ``mFR = mean_p FP_p / FP^base_p``
    (Hendrycks & Dietterich 2019, Sec. 4, with AlexNet as their baseline).

    Args:
        flip_rates: Perturbation name -> the model's flip probability.
        baseline_flip_rates: Perturbation name -> the baseline's flip probability.

    Returns:
        The mean (normalized) flip rate.

    Raises:
        ValueError: On no perturbations, rates outside [0, 1], a perturbation missing
            from the baseline, or a baseline flip rate of zero.
    """
    if not flip_rates:
        raise ValueError("no perturbations given: flip rates are empty")
    ratios = []
    for name, value in flip_rates.items():
        rate = _as_rate(value, f"flip rate of {name!r}")
        if baseline_flip_rates is None:
            ratios.append(rate)
            continue
        if name not in baseline_flip_rates:
            raise ValueError(f"baseline has no flip rate for perturbation {name!r}")
        base = _as_rate(baseline_flip_rates[name], f"baseline flip rate of {name!r}")
        if base == 0.0:
            raise ValueError(f"flip rate ratio undefined: baseline flip rate of {name!r} is 0")
        ratios.append(rate / base)
    return float(np.mean(ratios))


# ---------------------------------------------------------- shift consistency


def agreements(predictions_a: npt.ArrayLike, predictions_b: npt.ArrayLike) -> FloatArray:
    """1.0 where the two predictions of an image agree."""
    first = _as_vector(predictions_a, "predictions_a")
    second = _as_vector(predictions_b, "predictions_b")
    _require_same_length(predictions_a=first, predictions_b=second)
    agree: npt.NDArray[np.bool_] = first == second
    return agree.astype(np.float64)


def shift_consistency(predictions_a: npt.ArrayLike, predictions_b: npt.ArrayLike) -> float:
    """Shift consistency ``(1/N) Σ_i 1[ŷ(shift_1(x_i)) = ŷ(shift_2(x_i))]`` (Zhang 2019).

    Args:
        predictions_a: N top-1 predictions under each image's first random shift.
        predictions_b: N top-1 predictions under its second random shift.

    Returns:
        The fraction of images whose two predictions agree, in [0, 1].

    Raises:
        ValueError: If the inputs are empty, not 1-D or of different lengths.
    """
    return float(agreements(predictions_a, predictions_b).mean())


# ----------------------------------------------------------------- subgroups


@dataclass(frozen=True)
class SubgroupAccuracy:
    """Accuracy per subgroup and its worst case."""

    accuracy: Mapping[str, float]
    """Group id -> accuracy, in sorted group order."""
    counts: Mapping[str, int]
    """Group id -> number of samples."""
    worst_group: str
    """The group with the lowest accuracy (the first in sorted order on ties)."""
    worst_accuracy: float
    spread: float
    """max_g acc_g - min_g acc_g."""


def group_codes(
    predictions: npt.ArrayLike, labels: npt.ArrayLike, groups: npt.ArrayLike
) -> tuple[FloatArray, IntArray, list[str]]:
    """Per-sample correctness, integer group codes and the sorted group names."""
    correct = 1.0 - mismatches(predictions, labels)
    group_ids = _as_vector(groups, "groups").astype(str)
    _require_same_length(predictions=correct, groups=group_ids)
    names, codes = np.unique(group_ids, return_inverse=True)
    return correct, codes.astype(np.intp), [str(name) for name in names]


def group_accuracies(correct: FloatArray, codes: IntArray, n_groups: int) -> FloatArray:
    """Accuracy per group code; rows of a B x n input give a B x n_groups output."""
    hits = batched_bincount(np.atleast_2d(codes), n_groups, np.atleast_2d(correct))
    counts = batched_bincount(np.atleast_2d(codes), n_groups)
    return hits / counts


def subgroup_accuracy(
    predictions: npt.ArrayLike, labels: npt.ArrayLike, groups: npt.ArrayLike
) -> SubgroupAccuracy:
    """Per-group accuracy ``acc_g``, the worst group and the spread ``max - min``.

    Args:
        predictions: N predicted class ids.
        labels: N true class ids.
        groups: N group ids (strings; other values are converted with `str`).

    Returns:
        The per-group report.

    Raises:
        ValueError: If the inputs are empty, not 1-D or of different lengths.
    """
    correct, codes, names = group_codes(predictions, labels, groups)
    accuracy = group_accuracies(correct, codes, len(names))[0]
    counts = np.bincount(codes, minlength=len(names))
    worst = int(np.argmin(accuracy))
    return SubgroupAccuracy(
        accuracy=dict(zip(names, accuracy.tolist(), strict=True)),
        counts=dict(zip(names, counts.tolist(), strict=True)),
        worst_group=names[worst],
        worst_accuracy=float(accuracy[worst]),
        spread=float(accuracy.max() - accuracy.min()),
    )


def worst_group_accuracy(
    predictions: npt.ArrayLike, labels: npt.ArrayLike, groups: npt.ArrayLike
) -> float:
    """``min_g acc_g``; see `subgroup_accuracy` for the arguments and errors.

    Args:
        predictions: N predicted class ids.
        labels: N true class ids.
        groups: N group ids.

    Returns:
        The lowest per-group accuracy.
    """
    return subgroup_accuracy(predictions, labels, groups).worst_accuracy
