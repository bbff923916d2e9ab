"""The bootstrap against an independent computation on the same resampled indices.

The module documents its draws: ``default_rng(seed)``, one ``integers(0, n,
size=(b, n))`` call per batch (per stratum, in sorted stratum order). These
tests redo that resampling by hand and take the percentiles with
``numpy.quantile``, so a resampler that skips a row, a wrong percentile or an
ignored ``n_resamples`` changes the interval and fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.server.stats import bootstrap
from assay.server.stats.bootstrap import bootstrap_ci, bootstrap_estimate, mean_estimate
from assay.server.stats.estimate import Estimate

DATA = np.random.default_rng(11).normal(size=37)


def by_hand(
    statistic: object, data: np.ndarray, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    indices = np.random.default_rng(seed).integers(0, data.size, size=(n_resamples, data.size))
    replicates = np.array([statistic(data[row]) for row in indices])  # type: ignore[operator]
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


@pytest.mark.parametrize(("n_resamples", "confidence", "seed"), [(200, 0.9, 5), (57, 0.5, 0)])
@pytest.mark.parametrize("vectorized", [False, True])
def test_interval_equals_percentiles_of_hand_drawn_resamples(
    n_resamples: int, confidence: float, seed: int, vectorized: bool
) -> None:
    def statistic(x: np.ndarray) -> np.ndarray:
        return x.max(axis=-1) - x.min(axis=-1)  # sensitive to every drawn row

    interval = bootstrap_ci(
        statistic,
        DATA,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        vectorized=vectorized,
    )
    assert interval.estimate == float(DATA.max() - DATA.min())
    assert (interval.low, interval.high) == by_hand(statistic, DATA, n_resamples, confidence, seed)


def test_a_single_resample_gives_a_degenerate_interval_at_its_value() -> None:
    interval = bootstrap_ci(np.mean, DATA, n_resamples=1, seed=2)
    row = np.random.default_rng(2).integers(0, DATA.size, size=(1, DATA.size))[0]
    assert interval.low == interval.high == float(np.mean(DATA[row]))


def test_row_zero_is_drawn_and_paired_across_arrays() -> None:
    # Only row 0 is non-zero, so the share of resamples with a non-zero sum is
    # the share that drew row 0 (about 1 - (1 - 1/n)^n = 0.65 for n = 10).
    first = np.zeros(10)
    first[0] = 1.0
    hits = []
    for seed in range(200):
        interval = bootstrap_ci(lambda a, b: float(a.sum() - b.sum()), first, first, seed=seed,
                                n_resamples=1)  # fmt: skip
        assert interval.low == 0.0  # both arrays always get the same rows
        hits.append(bootstrap_ci(np.sum, first, n_resamples=1, seed=seed).low > 0.0)
    assert 0.5 < np.mean(hits) < 0.8


def test_stratified_interval_equals_hand_drawn_within_strata() -> None:
    labels = np.array([2, 0, 2, 1, 0, 2, 2, 1, 0, 2, 1, 1])
    values = np.random.default_rng(7).normal(size=labels.size)
    n_resamples, seed = 300, 9

    def statistic(x: np.ndarray, g: np.ndarray) -> float:
        assert np.array_equal(g, labels)  # every row stays in its stratum's positions
        return float(x[g == 0].mean() - x[g == 2].max())

    interval = bootstrap_ci(
        statistic, values, labels, n_resamples=n_resamples, seed=seed, strata=labels
    )
    rng = np.random.default_rng(seed)
    indices = np.empty((n_resamples, labels.size), dtype=np.intp)
    for code in (0, 1, 2):
        positions = np.flatnonzero(labels == code)
        picks = rng.integers(0, positions.size, size=(n_resamples, positions.size))
        indices[:, positions] = positions[picks]
    replicates = [statistic(values[row], labels[row]) for row in indices]
    assert (interval.low, interval.high) == tuple(np.quantile(replicates, [0.025, 0.975]))


def test_batches_continue_one_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch of 3 resamples of 37 rows: 7 batches of 3 and a last one of 1.
    monkeypatch.setattr(bootstrap, "MAX_BATCH_ELEMENTS", 3 * DATA.size)
    interval = bootstrap_ci(lambda x: x.mean(axis=-1), DATA, n_resamples=22, seed=4,
                            vectorized=True)  # fmt: skip
    rng = np.random.default_rng(4)
    sizes = [3] * 7 + [1]
    rows = np.concatenate([rng.integers(0, DATA.size, size=(b, DATA.size)) for b in sizes])
    replicates = DATA[rows].mean(axis=-1)
    assert (interval.low, interval.high) == tuple(np.quantile(replicates, [0.025, 0.975]))


def test_estimate_records_the_confidence_it_used() -> None:
    estimate = bootstrap_estimate(np.mean, DATA, n_resamples=100, confidence=0.8, seed=1)
    interval = bootstrap_ci(np.mean, DATA, n_resamples=100, confidence=0.8, seed=1)
    assert estimate == Estimate(interval.estimate, interval.low, interval.high, 0.8)


def test_mean_estimate_averages_every_axis_of_a_row() -> None:
    values = np.random.default_rng(5).random((30, 4))
    estimate = mean_estimate(values, n_resamples=150, confidence=0.9, seed=3)
    rows = np.random.default_rng(3).integers(0, 30, size=(150, 30))
    replicates = values[rows].mean(axis=(1, 2))
    assert estimate.value == pytest.approx(values.mean(), abs=1e-15)
    assert estimate.low == pytest.approx(np.quantile(replicates, 0.05), abs=1e-15)
    assert estimate.high == pytest.approx(np.quantile(replicates, 0.95), abs=1e-15)
    assert estimate.confidence == 0.9


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_rates_of_exactly_zero_and_one_have_degenerate_intervals(rate: float) -> None:
    estimate = mean_estimate(np.full(25, rate), n_resamples=50)
    assert (estimate.value, estimate.low, estimate.high) == (rate, rate, rate)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5, math.nan])
def test_confidence_outside_the_open_unit_interval_is_refused(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(np.mean, DATA, confidence=confidence)


@pytest.mark.parametrize("n_resamples", [0, -1])
def test_no_resamples_is_refused(n_resamples: int) -> None:
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(np.mean, DATA, n_resamples=n_resamples)


def test_nan_statistics_are_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci(lambda x: math.nan, DATA, n_resamples=10)
    # Finite on the original rows, NaN on a resample (a row 0 that is drawn).
    nan_on_repeat = lambda x: math.nan if np.unique(x).size < x.size else 0.0  # noqa: E731
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci(nan_on_repeat, DATA, n_resamples=10)
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci(lambda x: float(x[0]), np.r_[math.inf, DATA], n_resamples=5)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ((), "at least one array"),
        ((np.float64(1.0),), "one row per sample"),
        ((np.zeros(3), np.zeros(4)), "mismatched lengths"),
        ((np.zeros(0),), "empty"),
    ],
)
def test_bad_arrays_are_refused(arrays: tuple[np.ndarray, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(np.mean, *arrays)


def test_vectorized_statistic_must_return_one_value_per_resample() -> None:
    with pytest.raises(ValueError, match="one value per resample"):
        bootstrap_ci(lambda x: x.mean(), DATA, n_resamples=5, vectorized=True)


def test_strata_must_label_every_row() -> None:
    with pytest.raises(ValueError, match="one entry per row"):
        bootstrap_ci(np.mean, DATA, strata=np.zeros(DATA.size - 1))


def test_estimate_json_writes_non_finite_numbers_as_null() -> None:
    assert Estimate(0.5, 0.25, 0.75, 0.9).to_json() == {
        "value": 0.5,
        "low": 0.25,
        "high": 0.75,
        "confidence": 0.9,
    }
    assert Estimate.point(0.5, 0.8).to_json() == {
        "value": 0.5,
        "low": None,
        "high": None,
        "confidence": 0.8,
    }
    assert Estimate.undefined().to_json() == {
        "value": None,
        "low": None,
        "high": None,
        "confidence": 0.95,
    }
    assert Estimate(math.inf, -math.inf, math.nan, 0.95).to_json()["value"] is None


def test_estimates_are_immutable_values() -> None:
    import dataclasses

    estimate = Estimate(0.5, 0.25, 0.75, 0.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        estimate.value = 1.0  # type: ignore[misc]
    assert estimate == Estimate(0.5, 0.25, 0.75, 0.9) and len({estimate, estimate}) == 1


def test_defaults_are_1000_resamples_seed_0_and_95_percent() -> None:
    low, high = by_hand(np.mean, DATA, 1000, 0.95, 0)
    interval = bootstrap_ci(np.mean, DATA)
    assert (interval.low, interval.high) == (low, high)
    estimate = bootstrap_estimate(np.mean, DATA)
    assert (estimate.low, estimate.high, estimate.confidence) == (low, high, 0.95)
    mean = mean_estimate(DATA)
    assert (mean.low, mean.high, mean.confidence) == pytest.approx((low, high, 0.95), abs=1e-15)


def hand_stratified(labels: np.ndarray, n_resamples: int, seed: int, batch: int) -> np.ndarray:
    """Resample indices drawn as documented: per batch, per stratum in sorted order."""
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(labels == code) for code in np.unique(labels)]
    blocks = []
    for start in range(0, n_resamples, batch):
        size = min(batch, n_resamples - start)
        block = np.empty((size, labels.size), dtype=np.intp)
        for positions in strata:
            block[:, positions] = positions[
                rng.integers(0, positions.size, size=(size, positions.size))
            ]
        blocks.append(block)
    return np.concatenate(blocks)


def test_large_stratified_inputs_are_drawn_in_batches_of_max_batch_elements() -> None:
    # 5000 rows x 1000 resamples exceed 2**22 elements: batches of 2**22 // 5000 = 838.
    labels = np.arange(5000) % 3
    values = np.random.default_rng(8).random(5000)
    interval = bootstrap_ci(lambda x: x.mean(axis=-1), values, vectorized=True, strata=labels)
    rows = hand_stratified(labels, 1000, 0, (1 << 22) // 5000)
    expected = np.quantile(values[rows].mean(axis=-1), [0.025, 0.975])
    assert (interval.low, interval.high) == pytest.approx(tuple(expected), abs=1e-15)


def test_rows_wider_than_a_batch_are_drawn_one_resample_at_a_time() -> None:
    # 2048 rows of 2049 values exceed 2**22 elements per resample: one resample per batch.
    labels = np.arange(2048) % 2
    values = np.zeros((2048, 2049), dtype=np.float32)
    values[:, 0] = np.random.default_rng(9).random(2048)
    interval = bootstrap_ci(
        lambda x: x[..., 0].mean(axis=-1), values, n_resamples=3, vectorized=True, strata=labels
    )
    rows = hand_stratified(labels, 3, 0, 1)
    expected = np.quantile(values[rows, 0].mean(axis=-1), [0.025, 0.975])
    assert (interval.low, interval.high) == pytest.approx(tuple(expected), abs=1e-6)


def test_rows_without_columns_can_be_resampled() -> None:
    interval = bootstrap_ci(lambda x: float(x.shape[0]), np.zeros((5, 0)), n_resamples=3)
    assert (interval.estimate, interval.low, interval.high) == (5.0, 5.0, 5.0)


def test_intervals_are_immutable_values() -> None:
    import dataclasses

    interval = bootstrap_ci(np.mean, DATA, n_resamples=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        interval.low = 0.0  # type: ignore[misc]
