"""Deep nearest-neighbour OOD score on L2-normalised features.

Sun et al., 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors",
ICML, Sec. 3: with ``z = x / ‖x‖₂`` and a bank ``{z_i}`` of normalised
in-distribution reference features, the score is the distance to the k-th
nearest reference,

    ``s(x) = ‖z - z_(k)‖₂``

(the paper thresholds ``-s``; here higher = more anomalous). The paper uses
k = 50 on the full ImageNet bank; the default here is ``min(50, bank size)``.

For unit vectors ``‖a - b‖² = 2 - 2 aᵀb``, so the k-th nearest neighbour is
the k-th largest cosine similarity, found exactly with float32 matrix products
and ``partition``. Queries and bank are processed in blocks
(``query_chunk x bank_chunk``): each step keeps the running k best similarities
in a ``query_chunk x (k + bank_chunk)`` float32 buffer, partitioned in place. With
the defaults (1024 x 8192) the working memory is about 70 MB on top of the bank
(a 100k x 1280 bank is 512 MB of float32 itself), independent of the bank size.

Precision: similarities are float32, so distances carry an absolute error of
roughly ``1e-7 / s`` (about 3e-4 for exact duplicates, far less elsewhere).
Zero feature vectors stay zero after normalisation (distance √2 to every
reference). A query that is itself in the bank is its own nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

import numpy as np
import numpy.typing as npt

from assay.server.ood._common import (
    ROW_CHUNK,
    Float32Array,
    FloatArray,
    JsonDict,
    as_matrix,
    positive_int,
)
from assay.server.ood._stored import ArrayLayout, StoredArrays, profile_meta

__all__ = [
    "DEFAULT_BANK_CHUNK",
    "DEFAULT_K",
    "DEFAULT_QUERY_CHUNK",
    "KNNProfile",
    "fit_knn",
    "knn_score",
    "l2_normalise",
]

DEFAULT_K: Final = 50
"""Sun et al.'s k for ImageNet (capped at the bank size when k is not given)."""
DEFAULT_QUERY_CHUNK: Final = 1024
"""Queries per block."""
DEFAULT_BANK_CHUNK: Final = 8192
"""Bank rows per block."""
_NORM_FLOOR: Final = 1e-12


def l2_normalise(features: Float32Array) -> Float32Array:
    """Rows divided by their L2 norm (floored at 1e-12), float32, in row blocks."""
    out = np.empty(features.shape, dtype=np.float32)
    for start in range(0, features.shape[0], ROW_CHUNK):
        block = features[start : start + ROW_CHUNK].astype(np.float64)
        norms = np.sqrt(np.einsum("nd,nd->n", block, block))
        out[start : start + ROW_CHUNK] = block / np.maximum(norms, _NORM_FLOOR)[:, None]
    return out


@dataclass(frozen=True, eq=False)
class KNNProfile(StoredArrays):
    """A bank of normalised reference features and k.

    Attributes:
        bank: M x D float32 reference features, each row of unit L2 norm.
        k: Which nearest neighbour's distance is the score (1 ≤ k ≤ M).
    """

    KIND: ClassVar[str] = "knn"
    LAYOUT: ClassVar[ArrayLayout] = {"bank": (2, np.float32)}
    bank: Float32Array
    k: int

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.bank.shape[1])

    def meta(self) -> JsonDict:
        """Kind, version, dimension, bank size and k."""
        return profile_meta(self.KIND, dim=self.dim, bank_size=int(self.bank.shape[0]), k=self.k)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Self:
        """Rebuild from `to_arrays` / `meta` output; ValueError if inconsistent."""
        bank = cls.read_arrays(arrays, meta)["bank"]
        k = positive_int(meta.get("k"), "knn meta k")
        if k > bank.shape[0]:
            raise ValueError(f"knn meta k={k} exceeds the bank size {bank.shape[0]}")
        cls.check_meta_dim(meta, bank.shape[1], "bank")
        return cls(bank, k)


def fit_knn(features: npt.ArrayLike, *, k: int | None = None) -> KNNProfile:
    """Build the normalised reference bank (Sun et al., 2022).

    Args:
        features: M x D in-distribution reference features (M ≥ 2), finite.
        k: Neighbour rank used by the score; default ``min(DEFAULT_K, M)``.

    Returns:
        The profile (bank stored as float32).

    Raises:
        ValueError: On too few samples, non-finite features or k outside [1, M].
    """
    x = as_matrix(features, "features", dtype=np.float32, min_rows=2)
    m = x.shape[0]
    k_value = min(DEFAULT_K, m) if k is None else positive_int(k, "k")
    if k_value > m:
        raise ValueError(f"k={k_value} exceeds the number of reference features ({m})")
    return KNNProfile(l2_normalise(x), k_value)


def _kth_largest_similarity(
    queries: Float32Array, bank: Float32Array, k: int, bank_chunk: int
) -> Float32Array:
    """k-th largest ``qᵀb`` over the bank for each (normalised) query row."""
    q = queries.shape[0]
    width = k + min(bank_chunk, bank.shape[0])
    buffer = np.empty((q, width), dtype=np.float32)
    buffer[:, :k] = -np.inf
    for start in range(0, bank.shape[0], bank_chunk):
        block = bank[start : start + bank_chunk]
        used = k + block.shape[0]
        buffer[:, k:used] = queries @ block.T
        view = buffer[:, :used]
        view.partition(used - k, axis=1)
        buffer[:, :k] = view[:, used - k : used]
    result: Float32Array = buffer[:, :k].min(axis=1)
    return result


def knn_score(
    profile: KNNProfile,
    features: npt.ArrayLike,
    *,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    bank_chunk: int = DEFAULT_BANK_CHUNK,
) -> FloatArray:
    """Distance from each normalised query to its k-th nearest reference.

    Args:
        profile: From `fit_knn`.
        features: N x D query features (normalised here).
        query_chunk: Queries per block (memory ∝ query_chunk · (k + bank_chunk)).
        bank_chunk: Bank rows per block.

    Returns:
        N scores in ``[0, 2]``; higher = more anomalous.

    Raises:
        ValueError: On a dimension mismatch, non-finite features or bad chunk sizes.
    """
    q_chunk = positive_int(query_chunk, "query_chunk")
    b_chunk = positive_int(bank_chunk, "bank_chunk")
    x = as_matrix(features, "features", dtype=np.float32, cols=profile.dim)
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], q_chunk):
        queries = l2_normalise(x[start : start + q_chunk])
        similarity = _kth_largest_similarity(queries, profile.bank, profile.k, b_chunk)
        distance2 = 2.0 - 2.0 * similarity.astype(np.float64)
        out[start : start + q_chunk] = np.sqrt(np.maximum(distance2, 0.0))
    return out
