"""Ranking metrics against scikit-learn, on ties, edge positions and exact rates."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from assay.server.stats.ranking import (
    auroc,
    auroc_rows,
    average_precision,
    average_precision_rows,
    fpr_at_tpr_rows,
    tie_group_ends,
    tpr_rank,
)


def test_ap_with_a_positive_at_the_lowest_score_matches_sklearn() -> None:
    labels = np.array([1, 0, 1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])  # the last positive ranks last
    expected = average_precision_score(labels, scores)
    assert expected == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3, abs=1e-15)
    assert average_precision(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_ap_with_the_only_positive_last_and_tied_groups() -> None:
    labels = np.array([0, 0, 0, 1])
    scores = np.array([0.5, 0.5, 0.2, 0.2])  # the positive ties with a negative
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    assert average_precision(labels, scores) == 0.25


@pytest.mark.parametrize("seed", range(6))
def test_rows_match_sklearn_per_row_with_heavy_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=(4, 30)).astype(np.float64)
    positive = rng.random((4, 30)) < 0.4
    positive[:, 0] = True
    positive[:, 1] = False
    ap = average_precision_rows(scores, positive)
    for row in range(4):
        y, s = positive[row], scores[row]
        assert ap[row] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        in_scores, out_scores = s[~y][None], s[y][None]
        assert auroc_rows(in_scores, out_scores)[0] == pytest.approx(roc_auc_score(y, s))


def test_auroc_rows_are_independent_per_row() -> None:
    in_scores = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    out_scores = np.array([[0.4, 0.5], [0.0, 0.2]])
    np.testing.assert_array_equal(auroc_rows(in_scores, out_scores), [1.0, 1.5 / 6])


@pytest.mark.parametrize("tpr", [0.28, 0.5, 0.9, 0.95, 1.0])
def test_fpr_at_tpr_matches_the_first_roc_point_reaching_tpr(tpr: float) -> None:
    rng = np.random.default_rng(1)
    in_scores = rng.integers(0, 12, size=25).astype(np.float64)
    out_scores = rng.integers(4, 16, size=19).astype(np.float64)
    labels = np.r_[np.ones(25), np.zeros(19)]  # in-distribution accepted = positive
    fpr, tpr_curve, _ = roc_curve(labels, -np.r_[in_scores, out_scores], drop_intermediate=False)
    expected = fpr[np.flatnonzero(tpr_curve >= tpr)[0]]
    assert fpr_at_tpr_rows(in_scores[None], out_scores[None], tpr)[0] == expected


def test_fpr_at_tpr_uses_the_exact_rank_at_an_ulp_boundary() -> None:
    in_scores = np.arange(25.0)[None]  # 0.28 * 25 == 7.000000000000001
    out_scores = np.array([[6.0, 6.5, 7.0, 100.0]])
    # The 7th smallest (6.0) keeps 7/25 == 0.28: only the OOD score 6.0 is accepted.
    assert tpr_rank(0.28, 25) == 7
    assert fpr_at_tpr_rows(in_scores, out_scores, 0.28)[0] == 0.25


def test_fpr_at_tpr_of_exactly_zero_and_one() -> None:
    inside = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert fpr_at_tpr_rows(inside, np.array([[0.5, 0.9]]), 1.0)[0] == 0.0
    assert fpr_at_tpr_rows(inside, np.array([[0.0, 0.1]]), 0.25)[0] == 1.0  # a tie is accepted


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.0000001])
def test_tpr_outside_zero_one_is_refused(tpr: float) -> None:
    with pytest.raises(ValueError, match="tpr"):
        tpr_rank(tpr, 10)


def test_tie_group_ends() -> None:
    np.testing.assert_array_equal(
        tie_group_ends(np.array([[1.0, 1.0, 2.0, 3.0, 3.0, 3.0]])),
        [[False, True, True, False, False, True]],
    )
    np.testing.assert_array_equal(tie_group_ends(np.array([5.0])), [True])


def test_perfect_and_reversed_rankings() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc(labels, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert average_precision(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert average_precision(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "both classes"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        ([0, 1], [0.1, 0.2, 0.3], "differ in shape"),
        ([0, 1], [0.1, np.nan], "finite"),
        ([0, 1], [[0.1, 0.2]], "1-D"),
        ([], [], "non-empty"),
    ],
)
def test_bad_inputs_are_refused(labels: list[int], scores: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        auroc(labels, scores)


def test_ap_needs_a_positive() -> None:
    with pytest.raises(ValueError, match="at least one positive"):
        average_precision([0, 0], [0.1, 0.2])
    assert average_precision([1, 1], [0.1, 0.2]) == 1.0


@pytest.mark.parametrize("tpr", [0.05, 0.5, 0.95, 0.999])
def test_fpr_at_tpr_rows_on_large_unsorted_rows_match_a_full_sort(tpr: float) -> None:
    rng = np.random.default_rng(2)
    in_scores = rng.normal(size=(8, 2000))
    out_scores = rng.normal(loc=1.0, size=(8, 300))
    m = tpr_rank(tpr, 2000)
    threshold = np.sort(in_scores, axis=-1)[:, m - 1]
    expected = (out_scores <= threshold[:, None]).mean(axis=-1)
    np.testing.assert_array_equal(fpr_at_tpr_rows(in_scores, out_scores, tpr), expected)
