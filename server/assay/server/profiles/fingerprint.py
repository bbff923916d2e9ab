"""Binding fitted state to a model version: a stable hash of the model's outputs.

`fingerprint` hashes a model's outputs on a fixed probe input (for instance the
logits and features of a fixed set of images): identical weights and
pre-processing give the same fingerprint, so a service can refuse a profile
whose fingerprint differs from the loaded model's. Values are rounded to
``decimals`` places first so that backend noise (CPU vs GPU, batch size) below
that precision does not change the hash; a value that straddles a rounding
boundary can still flip it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

import numpy as np
import numpy.typing as npt

FINGERPRINT_HEADER: Final = "assay.ood.fingerprint/v1"
"""Hashed before the arrays. The name predates this package (OOD had it first);
changing it would invalidate every stored profile, so it stays."""


def array_digest(arrays: Mapping[str, np.ndarray], *, header: str) -> str:
    """Hex sha256 over ``header``, then sorted names, dtypes, shapes and C-order bytes."""
    digest = hashlib.sha256(header.encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def fingerprint(outputs: Mapping[str, npt.ArrayLike], *, decimals: int = 4) -> str:
    """Stable hash of a model's outputs on a fixed probe, ``"sha256:<hex>"``.

    Each output is rounded to ``decimals`` places in float64, cast to
    little-endian float32 (``-0.0`` normalised to ``0.0``) and hashed with its
    name and shape, in name order.

    Raises:
        ValueError: On no outputs or non-finite values.
    """
    if not outputs:
        raise ValueError("fingerprint needs at least one output array")
    rounded: dict[str, np.ndarray] = {}
    for name, values in outputs.items():
        array = np.asarray(values, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"output {name!r} contains NaN or infinite values")
        rounded[name] = (np.round(array, decimals) + 0.0).astype("<f4")
    return "sha256:" + array_digest(rounded, header=f"{FINGERPRINT_HEADER}/{decimals}")
