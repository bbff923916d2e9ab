"""The input contract every attack shares: a batch of [0, 1] images, their labels, a threat model.

Square (query-only) and FGSM/PGD (white-box) take the same arrays and the same
(norm, ε) pair, so they check them in one place and refuse them with the same
INVALID_ARGUMENT messages; each attack then checks only its own budget.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from assay.server.errors import InvalidArgumentError

Norm = Literal["linf", "l2"]
NORMS: tuple[Norm, ...] = ("linf", "l2")


def validate_batch(
    images: np.ndarray, labels: np.ndarray, norm: str, epsilon: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Float32 N x H x W x C images in [0, 1] and N int64 labels, else InvalidArgumentError.

    Also refuses a norm other than "linf"/"l2" and an ε that is not finite and > 0.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[0] == 0 or min(images.shape[1:]) == 0:
        raise InvalidArgumentError(
            f"images must be a non-empty N x H x W x C array, got {images.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise InvalidArgumentError(f"images must be float in [0, 1], got dtype {images.dtype}")
    if not np.isfinite(images).all() or images.min() < 0.0 or images.max() > 1.0:
        raise InvalidArgumentError("images must be finite and in [0, 1]")
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidArgumentError(f"labels must be {images.shape[0]} integers, got {labels.shape}")
    if norm not in NORMS:
        raise InvalidArgumentError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InvalidArgumentError(f"epsilon must be finite and > 0, got {epsilon}")
    return images.astype(np.float32), labels.astype(np.int64)
