"""Which order statistic meets a target rate, decided exactly in float64.

A threshold "at 95 % TPR" keeps the ``m``-th smallest of n scores, and one "at
5 % FPR" lets ``c`` of n scores through. The naive ``ceil(rate · n)`` /
``floor(rate · n)`` are off by one whenever the product lands an ulp away from
an integer (``0.28 · 25 = 7.000000000000001``, so ``ceil`` gives 8 although
``7 / 25 == 0.28``). Reports state the achieved rate as ``count / n`` in
float64, so the counts here are defined by that same division: the guarantee
the report prints holds exactly, and no count is one more (or one less) than
needed. ``count / n`` is monotone in the count, so each function starts from the
product and steps to the exact boundary: the product is within an ulp of the
exact one, so at most one step is taken however large n is (no clamping is
needed either: for a rate in [0, 1] the product lies in [0, n]).
"""

from __future__ import annotations

import math

__all__ = ["largest_count_at_most", "smallest_count_at_least"]


def _check(rate: float, n: int) -> None:
    if n < 1:
        raise ValueError(f"need at least one score, got n={n}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")


def smallest_count_at_least(rate: float, n: int) -> int:
    """Smallest m in [0, n] with ``m / n >= rate`` in float64.

    Args:
        rate: Target fraction in [0, 1] (e.g. a TPR to reach).
        n: Number of scores, at least 1.

    Returns:
        m; 0 only for ``rate == 0``.

    Raises:
        ValueError: On n < 1 or a rate outside [0, 1].
    """
    _check(rate, n)
    m = math.ceil(rate * n)
    while (m - 1) / n >= rate:  # never below 0: -1 / n < 0 <= rate
        m -= 1
    while m / n < rate:  # never above n: n / n == 1 >= rate
        m += 1
    return m


def largest_count_at_most(rate: float, n: int) -> int:
    """Largest c in [0, n] with ``c / n <= rate`` in float64.

    Args:
        rate: Target fraction in [0, 1] (e.g. an FPR not to exceed).
        n: Number of scores, at least 1.

    Returns:
        c; n only for ``rate == 1``.

    Raises:
        ValueError: On n < 1 or a rate outside [0, 1].
    """
    _check(rate, n)
    c = math.floor(rate * n)
    while (c + 1) / n <= rate:  # never above n: (n + 1) / n > 1 >= rate
        c += 1
    while c / n > rate:  # never below 0: 0 / n == 0 <= rate
        c -= 1
    return c
