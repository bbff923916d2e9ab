"""Statistics at their edges: T=2 flips, scores tied with a threshold, rates of 0 and 1."""

from __future__ import annotations

import numpy as np
import pytest

from assay.server.aigen.calibration import fit_detector_threshold
from assay.server.aigen.evaluation import accuracy, binary_metrics, proportion, ranked
from assay.server.ood.evaluation import evaluate_detector
from assay.server.ood.thresholds import fit_threshold, kept_fraction
from assay.server.robustness.estimates import error_rate_estimate, flip_rate_estimate
from assay.server.robustness.metrics import flip_rate
from assay.server.stats.ranking import auroc

TWO_FRAMES = np.array([[1, 1], [1, 2], [3, 3], [0, 5], [4, 4]])


@pytest.mark.parametrize("noise", [False, True])
def test_two_frame_sequences_flip_once_or_never(noise: bool) -> None:
    # With T = 2 both rules compare frame 2 with frame 1: one comparison per sequence.
    assert flip_rate(TWO_FRAMES, noise=noise) == 2 / 5
    estimate = flip_rate_estimate(TWO_FRAMES, noise=noise, n_resamples=200, seed=1)
    rows = np.random.default_rng(1).integers(0, 5, size=(200, 5))
    replicates = (TWO_FRAMES[:, 1] != TWO_FRAMES[:, 0])[rows].mean(axis=1)
    assert estimate.value == 2 / 5
    assert (estimate.low, estimate.high) == tuple(np.quantile(replicates, [0.025, 0.975]))


def test_three_frame_sequences_differ_between_rules() -> None:
    frames = np.array([[0, 1, 0]])
    assert flip_rate(frames) == 1.0  # 0->1 and 1->0
    assert flip_rate(frames, noise=True) == 0.5  # only frame 2 differs from frame 1


def test_one_frame_is_not_a_sequence() -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        flip_rate(np.array([[1], [2]]))


def test_generated_score_tied_with_the_threshold_counts_as_generated() -> None:
    real = np.array([0.1, 0.2, 0.3, 0.4])
    calibration = fit_detector_threshold(real, np.array([0.5]), 0.25)
    threshold = calibration.threshold
    assert threshold == float(np.nextafter(0.3, np.inf))
    generated = np.array([threshold, 0.3])  # one exactly at the threshold, one just below
    tied = fit_detector_threshold(real, generated, 0.25)
    assert tied.threshold == threshold and tied.tpr == 0.5 and tied.achieved_fpr == 0.25
    labels = np.array([0, 0, 0, 0, 1, 1])
    probs = np.r_[real, generated]
    correct = accuracy(labels, probs, threshold, resamples=50, seed=0)
    assert correct["value"] == 4 / 6  # the real 0.4 is a false positive, 0.3 generated missed
    assert proportion(generated >= threshold, resamples=50, seed=0)["value"] == 0.5


def test_rates_of_exactly_zero_and_one() -> None:
    labels = np.array([0, 1, 2, 1, 0])
    for wrong, rate in ((labels, 0.0), ((labels + 1) % 3, 1.0)):
        estimate = error_rate_estimate(wrong, labels, n_resamples=100)
        assert (estimate.value, estimate.low, estimate.high) == (rate, rate, rate)
    scores = np.array([0.3, 0.1, 0.2])
    assert fit_threshold(scores, 1.0) == 0.3 and kept_fraction(scores, 0.3) == 1.0
    everything = fit_detector_threshold(scores, np.array([0.05]), 1.0)
    assert everything.threshold == 0.05 and everything.achieved_fpr == 1.0
    nothing = fit_detector_threshold(scores, np.array([0.9]), 0.0)
    assert nothing.threshold == float(np.nextafter(0.3, np.inf)) and nothing.achieved_fpr == 0.0
    perfect = evaluate_detector([0.1, 0.2], [0.8, 0.9], n_resamples=50)
    assert perfect.auroc.value == perfect.auroc.low == perfect.auroc.high == 1.0
    assert perfect.fpr_at_tpr.value == perfect.fpr_at_tpr.high == 0.0


def test_single_class_metrics_are_null_not_a_number() -> None:
    labels = np.zeros(4, dtype=np.int64)
    probs = np.array([0.1, 0.6, 0.3, 0.9])
    assert ranked(auroc, labels, probs, resamples=20, seed=0) == {
        "value": None,
        "low": None,
        "high": None,
        "confidence": 0.95,
    }
    metrics = binary_metrics(labels, probs, 0.5, resamples=20, seed=0)
    assert metrics["generated_accuracy_at_0_5"]["value"] is None
    assert metrics["real_accuracy_at_0_5"]["value"] == 0.5


def test_log_odds_clip_probabilities_and_thresholds_at_one_in_a_million() -> None:
    from assay.server.aigen.calibration import calibrated_log_odds

    edge = np.log(1e-6) - np.log1p(-1e-6)  # logit(1e-6)
    odds = calibrated_log_odds(np.array([[0.0, 1.0], [0.5, 0.5]]), np.array([0.5, 1.5]))
    np.testing.assert_allclose(odds, [[edge, 0.0], [0.0, edge]], rtol=1e-9, atol=1e-12)
    assert np.isfinite(odds).all()


@pytest.mark.parametrize(
    ("probabilities", "thresholds", "match"),
    [
        (np.array([0.5, 0.5]), np.array([0.5, 0.5]), "N x 2"),
        (np.full((2, 3), 0.5), np.array([0.5, 0.5]), "N x 2"),
        (np.array([[-0.5, 0.5]]), np.array([0.5, 0.5]), r"in \[0, 1\]"),
        (np.array([[1.5, 0.5]]), np.array([0.5, 0.5]), r"in \[0, 1\]"),
        (np.array([[np.nan, 0.5]]), np.array([0.5, 0.5]), r"in \[0, 1\]"),
        (np.array([[0.5, 0.5]]), np.array([0.5, np.inf]), "finite"),
    ],
)
def test_log_odds_refuse_bad_inputs(
    probabilities: np.ndarray, thresholds: np.ndarray, match: str
) -> None:
    from assay.server.aigen.calibration import calibrated_log_odds

    with pytest.raises(ValueError, match=match):
        calibrated_log_odds(probabilities, thresholds)


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (3,)])
def test_ensemble_refuses_empty_or_flat_input(shape: tuple[int, ...]) -> None:
    from assay.server.aigen.calibration import ensemble

    with pytest.raises(ValueError, match="non-empty N x D"):
        ensemble(np.zeros(shape))


@pytest.mark.parametrize("target_fpr", [-0.1, 1.1, float("nan"), float("inf")])
def test_target_fpr_outside_zero_one_is_refused(target_fpr: float) -> None:
    with pytest.raises(ValueError, match="target_fpr"):
        fit_detector_threshold([0.1, 0.2], [0.9], target_fpr)


@pytest.mark.parametrize("scores", [[], [[0.1, 0.2]]])
def test_detector_scores_must_be_a_non_empty_vector(scores: list[object]) -> None:
    with pytest.raises(ValueError, match="non-empty 1-D"):
        fit_detector_threshold(scores, [0.9], 0.05)


def test_calibrations_are_immutable_values() -> None:
    import dataclasses

    calibration = fit_detector_threshold([0.1, 0.2], [0.9], 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        calibration.threshold = 0.0  # type: ignore[misc]
