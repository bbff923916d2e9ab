"""A metric value with its confidence interval, and its JSON form.

Every report schema writes an estimate as ``E = {value, low, high,
confidence}``; `Estimate.to_json` is the one place that shape is built. A
non-finite field (an undefined metric, or a statistic that has a point value
but no interval) is written as ``null``, so reports stay strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_CONFIDENCE", "Estimate", "EstimateJson"]

DEFAULT_CONFIDENCE: Final = 0.95
"""Coverage of the intervals in every report unless a caller asks for another."""

EstimateJson = dict[str, float | None]
"""``{"value", "low", "high", "confidence"}``; non-finite numbers become None."""


def _finite_or_none(number: float) -> float | None:
    return float(number) if math.isfinite(number) else None


@dataclass(frozen=True)
class Estimate:
    """A metric value with its percentile-bootstrap confidence interval.

    Attributes:
        value: The statistic on the original rows (NaN when undefined).
        low: Lower end of the interval (NaN when there is none).
        high: Upper end of the interval (NaN when there is none).
        confidence: Coverage of the interval in (0, 1), recorded as used.
    """

    value: float
    low: float
    high: float
    confidence: float

    @classmethod
    def point(cls, value: float, confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
        """A value without an interval (e.g. a statistic undefined on some resamples)."""
        return cls(float(value), math.nan, math.nan, confidence)

    @classmethod
    def undefined(cls, confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
        """No value and no interval (e.g. AUROC of a single class)."""
        return cls(math.nan, math.nan, math.nan, confidence)

    def to_json(self) -> EstimateJson:
        """The report form ``{value, low, high, confidence}``, non-finite numbers as None."""
        return {
            "value": _finite_or_none(self.value),
            "low": _finite_or_none(self.low),
            "high": _finite_or_none(self.high),
            "confidence": self.confidence,
        }
