"""Exact counts at ulp boundaries: the loops that correct ceil/floor of rate·n."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.server.aigen.calibration import fit_detector_threshold
from assay.server.ood.thresholds import fit_threshold, kept_fraction
from assay.server.stats.order_statistics import largest_count_at_most, smallest_count_at_least


def brute_smallest(rate: float, n: int) -> int:
    """The definition, by exhaustion: min m with m / n >= rate in float64."""
    return min(m for m in range(n + 1) if m / n >= rate)


def brute_largest(rate: float, n: int) -> int:
    """The definition, by exhaustion: max c with c / n <= rate in float64."""
    return max(c for c in range(n + 1) if c / n <= rate)


# (rate, n, naive, exact): each case enters one correction loop, so the naive
# ceil/floor of rate·n is off by one there.
SMALLEST_CASES = [
    (0.28, 25, 8, 7),  # 0.28 * 25 == 7.000000000000001, yet 7 / 25 == 0.28
    (0.56, 25, 15, 14),
    (float(np.nextafter(1 / 3, 1.0)), 3, 1, 2),  # the product rounds down to 1.0
    (float(np.nextafter(2 / 3, 1.0)), 3, 2, 3),
]
LARGEST_CASES = [
    (15 / 22, 22, 14, 15),  # 15/22 * 22 == 14.999999999999998, yet 15 / 22 == 15/22
    (13 / 23, 23, 12, 13),
    (float(np.nextafter(5 / 6, 0.0)), 6, 5, 4),  # the product rounds up to 5.0
    (float(np.nextafter(9 / 10, 0.0)), 10, 9, 8),
]


@pytest.mark.parametrize(("rate", "n", "naive", "exact"), SMALLEST_CASES)
def test_smallest_count_corrects_the_rounded_product(
    rate: float, n: int, naive: int, exact: int
) -> None:
    assert math.ceil(rate * n) == naive
    assert smallest_count_at_least(rate, n) == exact == brute_smallest(rate, n)


@pytest.mark.parametrize(("rate", "n", "naive", "exact"), LARGEST_CASES)
def test_largest_count_corrects_the_rounded_product(
    rate: float, n: int, naive: int, exact: int
) -> None:
    assert math.floor(rate * n) == naive
    assert largest_count_at_most(rate, n) == exact == brute_largest(rate, n)


def test_counts_match_the_definition_on_every_boundary() -> None:
    for n in range(1, 41):
        rates = {0.0, 1.0} | {k / 100 for k in range(101)}
        for k in range(n + 1):
            exact = k / n
            rates |= {exact, float(np.nextafter(exact, 2.0)), float(np.nextafter(exact, -1.0))}
        for rate in sorted(r for r in rates if 0.0 <= r <= 1.0):
            assert smallest_count_at_least(rate, n) == brute_smallest(rate, n), (rate, n)
            assert largest_count_at_most(rate, n) == brute_largest(rate, n), (rate, n)


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_rates_zero_and_one(n: int) -> None:
    assert smallest_count_at_least(0.0, n) == 0
    assert smallest_count_at_least(1.0, n) == n
    assert largest_count_at_most(0.0, n) == 0
    assert largest_count_at_most(1.0, n) == n
    tiny = float(np.nextafter(0.0, 1.0))
    assert smallest_count_at_least(tiny, n) == 1
    assert largest_count_at_most(float(np.nextafter(1.0, 0.0)), n) == n - 1


@pytest.mark.parametrize(
    ("rate", "n", "match"), [(-0.01, 5, "rate"), (1.01, 5, "rate"), (0.5, 0, "at least one")]
)
def test_bad_inputs(rate: float, n: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        smallest_count_at_least(rate, n)
    with pytest.raises(ValueError, match=match):
        largest_count_at_most(rate, n)


def test_fit_threshold_at_an_ulp_boundary_keeps_exactly_seven_of_25() -> None:
    holdout = np.random.default_rng(3).permutation(np.arange(25.0))
    threshold = fit_threshold(holdout, 0.28)
    assert threshold == 6.0  # the 7th smallest, not the 8th that ceil(0.28 * 25) names
    assert kept_fraction(holdout, threshold) == 0.28


def test_fit_detector_threshold_at_an_ulp_boundary_allows_exactly_15_of_22() -> None:
    real = np.random.default_rng(4).permutation(np.arange(22.0))
    generated = np.array([30.0, 40.0])
    calibration = fit_detector_threshold(real, generated, 15 / 22)
    # 15 real images may be flagged: the 16th largest (6.0) is the infimum.
    assert calibration.threshold == float(np.nextafter(6.0, np.inf))
    assert calibration.achieved_fpr == 15 / 22
    assert calibration.tpr == 1.0


@pytest.mark.parametrize("n", [10**12, 2**40 + 1, 999_999_999_989])
@pytest.mark.parametrize("rate", [0.05, 0.28, 0.95, 1 / 3, float(np.nextafter(0.5, 1.0))])
def test_counts_for_huge_n_meet_the_definition_in_a_step_or_two(rate: float, n: int) -> None:
    # An O(n) walk would never finish here; the defining inequalities are checked directly.
    m = smallest_count_at_least(rate, n)
    assert m / n >= rate > (m - 1) / n
    c = largest_count_at_most(rate, n)
    assert c / n <= rate < (c + 1) / n
