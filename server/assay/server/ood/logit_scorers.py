"""Stateless OOD scores computed from a classifier's logits alone.

Every function takes N x K logits ``z`` (N samples, K ≥ 1 classes, finite floats)
and returns N float64 scores where **higher means more anomalous** (more likely
out-of-distribution). With ``p = softmax(z / T)``:

* MSP (Hendrycks & Gimpel, 2017, "A Baseline for Detecting Misclassified and
  Out-of-Distribution Examples in Neural Networks", ICLR):
  ``s(x) = -max_k p_k``. ``T = 1`` is the paper; ``T > 1`` is the temperature
  scaling of ODIN (Liang et al., 2018), without its input perturbation.
* MaxLogit (Hendrycks et al., 2022, "Scaling Out-of-Distribution Detection for
  Real-World Settings", ICML): ``s(x) = -max_k z_k``.
* Energy (Liu et al., 2020, "Energy-based Out-of-distribution Detection",
  NeurIPS, eq. 1 and Sec. 3): free energy ``E(x; T) = -T · log Σ_k exp(z_k / T)``;
  the paper uses ``-E`` as an in-distribution score, so ``s(x) = E(x; T)``.
* Entropy of the predictive distribution: ``s(x) = -Σ_k p_k log p_k``, in nats,
  in ``[0, log K]``.

All softmax and log-sum-exp terms are evaluated with the maximum subtracted
first, so logits of any finite magnitude give finite scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from assay.server.ood._common import FloatArray, as_matrix
from assay.server.stats.softmax import log_softmax, logsumexp

__all__ = [
    "LOGIT_SCORERS",
    "energy_score",
    "entropy_score",
    "max_logit_score",
    "msp_score",
]


def _logits(logits: npt.ArrayLike) -> FloatArray:
    """Validated N x K float64 logits."""
    array: FloatArray = as_matrix(logits, "logits")
    return array


def _temperature(temperature: float) -> float:
    """A finite temperature > 0, else ValueError."""
    value = float(temperature)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


def msp_score(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """Negative maximum softmax probability, ``-max_k softmax(z / T)_k``.

    Computed as ``-exp(max_k z_k / T - logsumexp(z / T))``.

    Args:
        logits: N x K logits.
        temperature: Softmax temperature T > 0 (1 = Hendrycks & Gimpel).

    Returns:
        N scores in ``[-1, -1/K]``; higher = more anomalous.

    Raises:
        ValueError: On a non-2-D or non-finite input, or a bad temperature.
    """
    z = _logits(logits) / _temperature(temperature)
    result: FloatArray = -np.exp(z.max(axis=1) - logsumexp(z))
    return result


def max_logit_score(logits: npt.ArrayLike) -> FloatArray:
    """Negative maximum logit, ``-max_k z_k`` (Hendrycks et al., 2022).

    Args:
        logits: N x K logits.

    Returns:
        N scores; higher = more anomalous.

    Raises:
        ValueError: On a non-2-D or non-finite input.
    """
    result: FloatArray = -_logits(logits).max(axis=1)
    return result


def energy_score(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """Free energy ``-T · log Σ_k exp(z_k / T)`` (Liu et al., 2020).

    Args:
        logits: N x K logits.
        temperature: Energy temperature T > 0 (the paper uses 1).

    Returns:
        N scores; higher = more anomalous.

    Raises:
        ValueError: On a non-2-D or non-finite input, or a bad temperature.
    """
    t = _temperature(temperature)
    result: FloatArray = -t * logsumexp(_logits(logits) / t)
    return result


def entropy_score(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """Shannon entropy (nats) of ``softmax(z / T)``, ``-Σ_k p_k log p_k``.

    Computed from the log-softmax, so classes with ``p_k`` underflowing to 0
    contribute exactly 0 (the limit of ``p log p``).

    Args:
        logits: N x K logits.
        temperature: Softmax temperature T > 0.

    Returns:
        N scores in ``[0, log K]``; higher = more anomalous.

    Raises:
        ValueError: On a non-2-D or non-finite input, or a bad temperature.
    """
    log_p = log_softmax(_logits(logits) / _temperature(temperature))
    result: FloatArray = -(np.exp(log_p) * log_p).sum(axis=1)
    return np.maximum(result, 0.0)


LOGIT_SCORERS: Final[Mapping[str, Callable[..., FloatArray]]] = MappingProxyType(
    {
        "msp": msp_score,
        "max_logit": max_logit_score,
        "energy": energy_score,
        "entropy": entropy_score,
    }
)
"""Stateless scorers by kind name (the names used in saved profiles)."""
