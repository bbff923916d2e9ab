"""How a fitted profile is stored: named arrays of declared rank and dtype, plus a JSON meta.

Every fitted scorer (Mahalanobis, Gaussian, KNN, ViM, PatchCore) keeps its
state as a few numpy arrays and describes itself in a small JSON header.
Declaring the arrays once per profile (`LAYOUT`) lets one mixin write them and
read them back with the header, rank and exact dtype checked, so the profiles
cannot drift apart in how strictly they load. Each profile still checks the
shapes that must agree with each other, which only it knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from assay.server.ood._common import PROFILE_VERSION, JsonDict, array_field, check_meta

ArrayLayout = Mapping[str, tuple[int, type[np.generic]]]
"""Stored array name -> (rank, exact dtype)."""


class StoredArrays:
    """Mixin for a profile dataclass whose stored arrays are the attributes named in LAYOUT."""

    KIND: ClassVar[str]
    LAYOUT: ClassVar[ArrayLayout]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The LAYOUT attributes as arrays of their declared dtype (float attributes as 0-d)."""
        return {
            key: np.asarray(getattr(self, key), dtype=dtype)
            for key, (_, dtype) in self.LAYOUT.items()
        }

    @classmethod
    def read_arrays(
        cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """Every LAYOUT array, after checking ``meta`` is a readable profile of KIND.

        Raises:
            ValueError: On another kind, an unsupported version, or a missing array
                or one of the wrong rank or dtype.
        """
        check_meta(meta, cls.KIND)
        return {
            key: array_field(arrays, key, cls.KIND, ndim=ndim, dtype=dtype)
            for key, (ndim, dtype) in cls.LAYOUT.items()
        }

    @classmethod
    def check_meta_dim(cls, meta: Mapping[str, Any], dim: int, source: str = "array") -> None:
        """Raise ValueError unless ``meta["dim"]`` is the feature dimension of the arrays."""
        if meta.get("dim") != dim:
            raise ValueError(f"{cls.KIND} meta dim {meta.get('dim')!r} != {source} dim {dim}")


def profile_meta(kind: str, **fields: Any) -> JsonDict:
    """A profile's meta: its kind, the format version written by this code, then its fields."""
    return {"kind": kind, "version": PROFILE_VERSION, **fields}
