"""Stable log-sum-exp, log-softmax and softmax over the last axis, and the logistic sigmoid.

Every form subtracts the row maximum ``m`` first: ``logsumexp(z) = m + log Σ_j
exp(z_j - m)``, so no term overflows and the largest term is exactly 1 (no
``log 0``). One implementation serves the robustness calibration metrics, the
OOD logit scorers and the serving path's class probabilities (float32 there).
"""

from __future__ import annotations

from typing import overload

import numpy as np
import numpy.typing as npt

from assay.server.stats.arrays import FloatArray

__all__ = ["log_softmax", "logsumexp", "sigmoid", "softmax"]

Float32Array = npt.NDArray[np.float32]


def logsumexp(values: npt.ArrayLike) -> FloatArray:
    """``log Σ_j exp(v_j)`` over the last axis, in float64.

    Args:
        values: ... x K finite scores.

    Returns:
        The array without its last axis.
    """
    v = np.asarray(values, dtype=np.float64)
    peak = v.max(axis=-1)
    result: FloatArray = peak + np.log(np.exp(v - peak[..., None]).sum(axis=-1))
    return result


def log_softmax(logits: npt.ArrayLike) -> FloatArray:
    """``z_k - log Σ_j exp(z_j)`` over the last axis, in float64.

    Args:
        logits: ... x K scores.

    Returns:
        Log-probabilities of the same shape.
    """
    z = np.asarray(logits, dtype=np.float64)
    result: FloatArray = z - logsumexp(z)[..., None]
    return result


@overload
def softmax(logits: npt.ArrayLike) -> FloatArray: ...
@overload
def softmax(logits: npt.ArrayLike, dtype: type[np.float32]) -> Float32Array: ...


def softmax(
    logits: npt.ArrayLike, dtype: type[np.float64] | type[np.float32] = np.float64
) -> FloatArray | Float32Array:
    """``exp(z_k - m) / Σ_j exp(z_j - m)`` over the last axis, in `dtype`.

    Args:
        logits: ... x K scores.
        dtype: Precision of the computation and the result (float32 on the serving
            path, where the model's own outputs are float32).

    Returns:
        Probabilities of the same shape; each row sums to 1.
    """
    z = np.asarray(logits, dtype=dtype)
    shifted = z - z.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def sigmoid(values: npt.ArrayLike) -> FloatArray:
    """``1 / (1 + exp(-x))`` element-wise in float64, without overflow for large ``|x|``.

    The two-class softmax: written as ``exp(x) / (1 + exp(x))`` for negative
    ``x`` so that ``exp`` never sees a large positive argument.
    """
    x = np.asarray(values, dtype=np.float64)
    e = np.exp(-np.abs(x))
    result: FloatArray = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return result
