"""Softmax, log-softmax, log-sum-exp and the batched bincount against direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import logsumexp as scipy_logsumexp

from assay.server.stats.bincount import batched_bincount
from assay.server.stats.softmax import log_softmax, logsumexp, sigmoid, softmax

LOGITS = np.random.default_rng(0).normal(scale=5.0, size=(6, 9))


def test_against_scipy() -> None:
    np.testing.assert_allclose(logsumexp(LOGITS), scipy_logsumexp(LOGITS, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(log_softmax(LOGITS), scipy_log_softmax(LOGITS, axis=-1), atol=1e-13)
    np.testing.assert_allclose(softmax(LOGITS), np.exp(scipy_log_softmax(LOGITS, axis=-1)))


def test_sigmoid_against_scipy_and_the_two_class_softmax() -> None:
    x = np.array([-800.0, -30.0, -1.5, 0.0, 0.25, 7.0, 800.0])
    with np.errstate(over="raise"):  # neither branch may overflow
        np.testing.assert_allclose(sigmoid(x), expit(x), rtol=1e-15)
    pairs = np.stack([np.zeros_like(x), x], axis=-1)
    np.testing.assert_allclose(sigmoid(x), softmax(pairs)[:, 1], rtol=1e-12)
    assert sigmoid(0.0) == 0.5 and 0.0 < sigmoid(-700.0) < 1e-300  # no early underflow


def test_large_logits_do_not_overflow() -> None:
    z = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    expected = np.exp([-1.0, 0.0, -2.0]) / np.exp([-1.0, 0.0, -2.0]).sum()
    np.testing.assert_allclose(softmax(z)[0], expected, rtol=1e-15)
    np.testing.assert_allclose(softmax(z)[1], [1 / 3] * 3, rtol=1e-15)
    assert logsumexp(z)[0] == pytest.approx(1001.0 + np.log(np.exp([-1.0, 0.0, -2.0]).sum()))
    assert np.isfinite(log_softmax(z)).all()


def test_float32_softmax_stays_float32_and_matches() -> None:
    z = LOGITS.astype(np.float32)
    probs = softmax(z, np.float32)
    assert probs.dtype == np.float32 and probs.shape == z.shape
    np.testing.assert_allclose(probs, softmax(LOGITS), rtol=2e-6)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-6)
    assert softmax(z).dtype == np.float64


def test_softmax_is_over_the_last_axis_of_any_shape() -> None:
    z = LOGITS.reshape(2, 3, 9)
    np.testing.assert_allclose(softmax(z).reshape(6, 9), softmax(LOGITS), rtol=1e-15)
    np.testing.assert_allclose(logsumexp(z).ravel(), logsumexp(LOGITS), rtol=1e-15)


def test_batched_bincount_counts_each_row_separately() -> None:
    codes = np.array([[0, 2, 2, 1], [3, 3, 3, 0]])
    weights = np.array([[0.5, 1.0, 2.0, 4.0], [1.0, 1.0, 1.0, 8.0]])
    np.testing.assert_array_equal(batched_bincount(codes, 4), [[1, 1, 2, 0], [1, 0, 0, 3]])
    np.testing.assert_array_equal(
        batched_bincount(codes, 4, weights), [[0.5, 4.0, 3.0, 0.0], [8.0, 0.0, 0.0, 3.0]]
    )
    assert batched_bincount(codes, 5).shape == (2, 5)
