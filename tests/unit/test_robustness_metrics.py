"""Robustness metrics against independent computations on fixed inputs."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss

from assay.server.robustness.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)
from assay.server.robustness.estimates import (
    ece_estimate,
    error_rate_estimate,
    flip_rate_estimate,
    shift_consistency_estimate,
    worst_group_accuracy_estimate,
)
from assay.server.robustness.metrics import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    corruption_error,
    corruption_summary,
    error_rate,
    flip_rate,
    mean_corruption_error,
    mean_flip_rate,
    relative_corruption_error,
    relative_mean_corruption_error,
    shift_consistency,
    subgroup_accuracy,
    worst_group_accuracy,
)
from assay.server.stats.bootstrap import bootstrap_ci
from assay.server.stats.estimate import Estimate
from assay.server.stats.softmax import softmax


def random_probabilities(seed: int, n: int = 200, k: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


def random_labels(seed: int, n: int = 200, k: int = 5) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, k, size=n)


def mean_of_rows(values: np.ndarray) -> np.ndarray:
    return np.asarray(values.mean(axis=-1))


# ------------------------------------------------------------------ error rate


def test_error_rate_matches_sklearn_accuracy() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=500)
    predictions = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 10, size=500))
    assert error_rate(predictions, labels) == pytest.approx(
        1.0 - accuracy_score(labels, predictions)
    )


def test_error_rate_accepts_string_labels() -> None:
    assert error_rate(["cat", "dog", "cat"], ["cat", "cat", "cat"]) == pytest.approx(1 / 3)


# ----------------------------------------------------------------- calibration


def test_brier_matches_a_direct_loop() -> None:
    probs, labels = random_probabilities(1), random_labels(1)
    expected = 0.0
    for row, label in zip(probs, labels, strict=True):
        expected += sum((p - (1.0 if k == label else 0.0)) ** 2 for k, p in enumerate(row))
    expected /= len(labels)
    assert brier_score(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_nll_matches_sklearn_log_loss() -> None:
    probs, labels = random_probabilities(2), random_labels(2)
    expected = log_loss(labels, probs, labels=list(range(5)))
    assert negative_log_likelihood(probs, labels) == pytest.approx(expected, rel=1e-9)


def test_nll_from_logits_matches_sklearn_on_softmax() -> None:
    logits = np.random.default_rng(3).normal(0.0, 3.0, size=(200, 5))
    labels = random_labels(3)
    expected = log_loss(labels, softmax(logits), labels=list(range(5)))
    assert negative_log_likelihood(logits, labels, from_logits=True) == pytest.approx(
        expected, rel=1e-9
    )


# Hand-checked ECE probe, 15 equal-width bins (m/15, (m+1)/15]:
#   row  probs               label  pred  conf  correct  bin
#   0    [.95, .03, .02]     0      0     .95   1        14  (.933, 1]
#   1    [.02, .97, .01]     0      1     .97   0        14
#   2    [.70, .20, .10]     0      0     .70   1        10  (.667, .733]
#   3    [.10, .20, .70]     1      2     .70   0        10
#   4    [.45, .30, .25]     2      0     .45   0         6  (.400, .467]
#   5    [.30, .45, .25]     1      1     .45   1         6
# bin 14: acc .5, conf .96 -> gap .46;  bin 10: acc .5, conf .70 -> gap .20;
# bin 6:  acc .5, conf .45 -> gap .05;  each bin holds 2/6 of the samples, so
# ECE = (.46 + .20 + .05) / 3 = .71 / 3 = 0.236666...,  MCE = .46.
ECE_PROBE = np.array([
    [0.95, 0.03, 0.02],
    [0.02, 0.97, 0.01],
    [0.70, 0.20, 0.10],
    [0.10, 0.20, 0.70],
    [0.45, 0.30, 0.25],
    [0.30, 0.45, 0.25],
])  # fmt: skip
ECE_PROBE_LABELS = np.array([0, 0, 0, 1, 2, 1])


def test_ece_and_mce_on_hand_checked_probe() -> None:
    assert expected_calibration_error(ECE_PROBE, ECE_PROBE_LABELS) == pytest.approx(0.71 / 3)
    assert maximum_calibration_error(ECE_PROBE, ECE_PROBE_LABELS) == pytest.approx(0.46)


def test_reliability_bins_cover_unit_interval_and_sum_to_n() -> None:
    probs, labels = random_probabilities(4, n=300), random_labels(4, n=300)
    bins = reliability_diagram(probs, labels)
    assert len(bins) == 15
    assert sum(b.count for b in bins) == 300
    assert bins[0].lower == 0.0 and bins[-1].upper == 1.0
    assert all(a.upper == b.lower for a, b in itertools.pairwise(bins))
    ece = sum(b.count / 300 * abs(b.accuracy - b.mean_confidence) for b in bins if b.count)
    assert expected_calibration_error(probs, labels) == pytest.approx(ece)


def test_reliability_bins_of_probe() -> None:
    bins = reliability_diagram(ECE_PROBE, ECE_PROBE_LABELS)
    assert [m for m, b in enumerate(bins) if b.count] == [6, 10, 14]
    assert bins[14].mean_confidence == pytest.approx(0.96)
    assert bins[14].accuracy == pytest.approx(0.5)
    assert np.isnan(bins[0].accuracy)


def sample_labels(logits: np.ndarray, seed: int) -> np.ndarray:
    """One label per row, drawn from softmax(logits) by inverting the CDF."""
    cdf = np.cumsum(softmax(logits), axis=1)
    draws = np.random.default_rng(seed).random((len(logits), 1))
    return np.asarray(np.minimum((draws > cdf).sum(axis=1), logits.shape[1] - 1))


def test_temperature_scaling_recovers_known_temperature() -> None:
    true_logits = np.random.default_rng(5).normal(0.0, 1.5, size=(20_000, 10))
    labels = sample_labels(true_logits, seed=6)
    overconfident = 2.5 * true_logits  # calibrated logits = these / 2.5
    fit = fit_temperature(overconfident, labels)
    assert fit.temperature == pytest.approx(2.5, rel=0.10)
    assert fit.ece_after < fit.ece_before
    assert fit.nll_after < fit.nll_before
    assert fit.nll_before == pytest.approx(
        negative_log_likelihood(overconfident, labels, from_logits=True)
    )
    assert fit.ece_after == pytest.approx(
        expected_calibration_error(overconfident / fit.temperature, labels, from_logits=True)
    )


def test_extreme_logits_stay_finite() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 800.0, 0.0]])
    assert negative_log_likelihood(logits, [0, 0], from_logits=True) == pytest.approx(400.0)
    assert brier_score(logits, [0, 1], from_logits=True) == pytest.approx(0.0)


# ---------------------------------------------------------- corruption errors

# Toy 2-corruption x 5-severity table.
# a: model sums to 1.5, baseline to 2.5          -> CE = 0.6
# b: model sums to 1.0, baseline to 2.0          -> CE = 0.5;  mCE = 0.55
# Clean errors: model 0.05, baseline 0.20 (5 severities each subtract 5 x clean):
# a: (1.5 - 0.25) / (2.5 - 1.0) = 1.25 / 1.5 = 0.8333...
# b: (1.0 - 0.25) / (2.0 - 1.0) = 0.75;          relative mCE = (5/6 + 3/4) / 2 = 19/24
TOY_MODEL = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.2] * 5}
TOY_BASELINE = {"a": [0.3, 0.4, 0.5, 0.6, 0.7], "b": [0.4] * 5}


def test_corruption_errors_on_toy_table() -> None:
    assert corruption_error(TOY_MODEL["a"], TOY_BASELINE["a"]) == pytest.approx(0.6)
    assert corruption_error(TOY_MODEL["b"], TOY_BASELINE["b"]) == pytest.approx(0.5)
    assert mean_corruption_error(TOY_MODEL, TOY_BASELINE) == pytest.approx(0.55)
    assert relative_corruption_error(TOY_MODEL["a"], TOY_BASELINE["a"], 0.05, 0.2) == (
        pytest.approx(1.25 / 1.5)
    )
    assert relative_mean_corruption_error(TOY_MODEL, TOY_BASELINE, 0.05, 0.2) == (
        pytest.approx(19 / 24)
    )


def test_corruption_summary_on_toy_table() -> None:
    summary = corruption_summary(TOY_MODEL, 0.05, TOY_BASELINE, 0.2, baseline_name="toy")
    assert dict(summary.corruption_errors) == pytest.approx({"a": 0.6, "b": 0.5})
    assert dict(summary.relative_corruption_errors) == pytest.approx({"a": 1.25 / 1.5, "b": 0.75})
    assert summary.mce == pytest.approx(0.55)
    assert summary.relative_mce == pytest.approx(19 / 24)
    assert summary.baseline == "toy"


PUBLISHED_ALEXNET_MEANS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}  # fmt: skip


def test_alexnet_table_matches_published_averages() -> None:
    from assay.server.robustness.corruptions import IMAGENET_C

    assert tuple(ALEXNET_ERRORS) == IMAGENET_C
    for name, curve in ALEXNET_ERRORS.items():
        assert len(curve) == 5
        assert np.mean(curve) == pytest.approx(PUBLISHED_ALEXNET_MEANS[name], abs=1e-9), name
        counts = np.asarray(curve) * 50_000  # errors out of the 50,000 validation images
        assert np.allclose(counts, np.round(counts), atol=1e-6), name
    assert round(100 * ALEXNET_CLEAN_ERROR, 2) == 43.48


def test_alexnet_is_the_default_baseline() -> None:
    summary = corruption_summary(dict(ALEXNET_ERRORS), ALEXNET_CLEAN_ERROR)
    assert summary.baseline == "alexnet"
    assert summary.mce == pytest.approx(1.0)
    assert summary.relative_mce == pytest.approx(1.0)
    # Sum over severities / (5 x published average) gives the same CE.
    model = {"fog": [0.3, 0.35, 0.4, 0.45, 0.5]}
    ce = corruption_summary(model, 0.2).corruption_errors["fog"]
    assert ce == pytest.approx(2.0 / (5 * PUBLISHED_ALEXNET_MEANS["fog"]))


# ------------------------------------------------------- flip rate, shift, groups


def test_flip_rate_both_modes() -> None:
    sequences = np.array([[1, 2, 2, 2, 2], [3, 3, 3, 3, 3]])
    # consecutive: row 0 flips once in 4 steps, row 1 never -> 1/8
    assert flip_rate(sequences) == pytest.approx(1 / 8)
    # noise: row 0 differs from its first frame at all 4 later frames -> 4/8
    assert flip_rate(sequences, noise=True) == pytest.approx(4 / 8)


def test_mean_flip_rate_plain_and_normalized() -> None:
    rates = {"translate": 0.1, "gaussian_noise": 0.3}
    assert mean_flip_rate(rates) == pytest.approx(0.2)
    baseline = {"translate": 0.2, "gaussian_noise": 0.6}
    assert mean_flip_rate(rates, baseline) == pytest.approx(0.5)


def test_shift_consistency() -> None:
    assert shift_consistency([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(0.75)


def test_subgroup_worst_group_on_toy() -> None:
    groups = ["a", "a", "b", "b", "b", "c"]
    labels = [0, 1, 0, 1, 2, 1]
    predictions = [0, 1, 0, 0, 0, 1]  # a: 2/2, b: 1/3, c: 1/1
    report = subgroup_accuracy(predictions, labels, groups)
    assert dict(report.accuracy) == pytest.approx({"a": 1.0, "b": 1 / 3, "c": 1.0})
    assert dict(report.counts) == {"a": 2, "b": 3, "c": 1}
    assert report.worst_group == "b"
    assert report.worst_accuracy == pytest.approx(1 / 3)
    assert report.spread == pytest.approx(2 / 3)
    assert worst_group_accuracy(predictions, labels, groups) == pytest.approx(1 / 3)
    assert dataclasses.asdict(report)["counts"] == {"a": 2, "b": 3, "c": 1}


# ------------------------------------------------------------------- bootstrap


def bernoulli(n: int, seed: int, p: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(np.float64)


def test_bootstrap_contains_estimate_and_is_deterministic() -> None:
    data = np.random.default_rng(7).normal(1.0, 2.0, size=200)
    first = bootstrap_ci(mean_of_rows, data, vectorized=True, seed=3)
    again = bootstrap_ci(mean_of_rows, data, vectorized=True, seed=3)
    other = bootstrap_ci(mean_of_rows, data, vectorized=True, seed=4)
    assert first == again
    assert first != other
    assert first.estimate == pytest.approx(data.mean())
    assert first.low <= first.estimate <= first.high


def test_bootstrap_vectorized_and_looped_agree() -> None:
    data = bernoulli(50, seed=8)
    looped = bootstrap_ci(np.mean, data, n_resamples=200, seed=1)
    batched = bootstrap_ci(mean_of_rows, data, n_resamples=200, seed=1, vectorized=True)
    assert looped.low == pytest.approx(batched.low)
    assert looped.high == pytest.approx(batched.high)


def test_bootstrap_resamples_rows_jointly() -> None:
    x = np.arange(40, dtype=np.float64)
    interval = bootstrap_ci(lambda a, b: float(np.mean(a - b)), x, x.copy(), n_resamples=50)
    assert interval == type(interval)(0.0, 0.0, 0.0)


def test_bootstrap_narrows_with_more_data() -> None:
    small = bootstrap_ci(mean_of_rows, bernoulli(100, seed=9), vectorized=True)
    large = bootstrap_ci(mean_of_rows, bernoulli(10_000, seed=9), vectorized=True)
    assert large.high - large.low < (small.high - small.low) / 5


def test_bootstrap_coverage_is_roughly_nominal() -> None:
    p, covered = 0.3, 0
    for simulation in range(100):
        interval = bootstrap_ci(
            mean_of_rows,
            bernoulli(100, seed=100 + simulation, p=p),
            vectorized=True,
            seed=simulation,
        )
        covered += interval.low <= p <= interval.high
    assert covered >= 85


def test_estimates_match_point_metrics() -> None:
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 3, size=300)
    predictions = np.where(rng.random(300) < 0.8, labels, (labels + 1) % 3)
    groups = np.array(["x", "y", "z"])[rng.integers(0, 3, size=300)]
    sequences = rng.integers(0, 3, size=(60, 6))
    probs = random_probabilities(11, n=300, k=3)
    checks: list[tuple[Estimate, float]] = [
        (error_rate_estimate(predictions, labels), error_rate(predictions, labels)),
        (shift_consistency_estimate(predictions, labels), shift_consistency(predictions, labels)),
        (flip_rate_estimate(sequences, noise=True), flip_rate(sequences, noise=True)),
        (ece_estimate(probs, labels), expected_calibration_error(probs, labels)),
        (
            worst_group_accuracy_estimate(predictions, labels, groups),
            worst_group_accuracy(predictions, labels, groups),
        ),
    ]
    for estimate, point in checks:
        assert estimate.value == pytest.approx(point)
        assert estimate.low <= estimate.value <= estimate.high
        assert estimate.confidence == 0.95


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: error_rate([1, 2, 3], [1, 2]), "mismatched lengths"),
        (lambda: error_rate([], []), "empty"),
        (lambda: shift_consistency([1], [1, 2]), "mismatched lengths"),
        (lambda: subgroup_accuracy([1, 2], [1, 2], ["a"]), "mismatched lengths"),
        (lambda: brier_score(np.array([[0.5, 0.6]]), [0]), "sum to 1"),
        (lambda: expected_calibration_error(np.array([[0.2, 0.2]]), [0]), "sum to 1"),
        (lambda: negative_log_likelihood(np.array([[1.5, -0.5]]), [0]), "non-negative"),
        (lambda: brier_score(np.array([[0.5, 0.5]]), [0, 1]), "mismatched lengths"),
        (lambda: brier_score(np.zeros((0, 3)), []), "empty"),
        (lambda: brier_score(np.array([[0.5, 0.5]]), [2]), r"\[0, 2\)"),
        (lambda: corruption_error([0.1, 0.2], [0.0, 0.0]), "sum to zero"),
        (lambda: corruption_error([0.1, 0.2], [0.3]), "mismatched lengths"),
        (lambda: corruption_error([1.2], [0.3]), r"\[0, 1\]"),
        (lambda: relative_corruption_error([0.5], [0.3], 0.1, 0.3), "do not exceed"),
        (lambda: mean_corruption_error({"fog": [0.1]}, {"snow": [0.2]}), "'fog'"),
        (lambda: corruption_summary({"spatter": [0.5] * 5}, 0.2), "spatter"),
        (lambda: corruption_summary(TOY_MODEL, 0.05, TOY_BASELINE), "clean error"),
        (lambda: flip_rate(np.array([[1], [2]])), "at least 2 frames"),
        (lambda: flip_rate(np.array([1, 2, 3])), "2-D"),
        (lambda: mean_flip_rate({"tilt": 0.1}, {"tilt": 0.0}), "baseline flip rate"),
        (lambda: bootstrap_ci(np.mean, np.arange(3), np.arange(4)), "mismatched lengths"),
        (lambda: bootstrap_ci(np.mean, np.array([])), "empty"),
        (lambda: bootstrap_ci(np.mean, np.arange(3), confidence=1.0), "confidence"),
    ],
)
def test_bad_input_raises_value_error(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()
