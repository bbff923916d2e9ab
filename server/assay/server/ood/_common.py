"""Shared input validation and the fitted-profile protocol.

Private to :mod:`assay.server.ood`; everything raises `ValueError` with a message
that names the offending argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol, Self

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
JsonDict = dict[str, Any]
"""A JSON-serialisable mapping (str keys; str, int, float, bool, None, lists, dicts)."""

PROFILE_VERSION: Final = 1
"""Version of every fitted profile's array/meta layout written by this code."""
ROW_CHUNK: Final = 4096
"""Rows per block when scanning large arrays, to bound temporary memory."""


class FittedProfile(Protocol):
    """What every fitted scorer's profile provides (see the concrete dataclasses).

    ``to_arrays()`` and ``meta()`` are the whole state: ``from_arrays(to_arrays(),
    meta())`` rebuilds an equal profile bit for bit.
    """

    KIND: ClassVar[str]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The profile's numeric state as named numpy arrays (no object dtypes)."""
        ...

    def meta(self) -> JsonDict:
        """JSON-able description: at least ``kind`` and ``version``."""
        ...

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Self:
        """Rebuild a profile from :meth:`to_arrays` and :meth:`meta` output."""
        ...


def all_finite(array: np.ndarray) -> bool:
    """Whether every element is finite, scanning rows in blocks (bounded memory)."""
    if array.ndim == 0 or array.shape[0] <= ROW_CHUNK:
        return bool(np.isfinite(array).all())
    return all(
        bool(np.isfinite(array[start : start + ROW_CHUNK]).all())
        for start in range(0, array.shape[0], ROW_CHUNK)
    )


def _float_array(
    values: npt.ArrayLike, name: str, dtype: type[np.floating[Any]], ndim: int, shape: str
) -> np.ndarray:
    """``values`` as a ``dtype`` array of rank ``ndim`` (``shape`` names it in errors)."""
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {shape} array, got shape {array.shape}")
    return array


def as_matrix(
    values: npt.ArrayLike,
    name: str,
    *,
    dtype: type[np.floating[Any]] = np.float64,
    cols: int | None = None,
    min_rows: int = 0,
) -> np.ndarray:
    """A finite 2-D float array of the given dtype, else ValueError.

    Args:
        values: Anything `numpy.asarray` accepts.
        name: Argument name used in error messages.
        dtype: Target float dtype (no copy when already of it).
        cols: Required number of columns, if any.
        min_rows: Minimum number of rows.

    Returns:
        The validated array.

    Raises:
        ValueError: On wrong rank, column count, too few rows or non-finite values.
    """
    array = _float_array(values, name, dtype, 2, "2-D (N x D)")
    if cols is not None and array.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns, got shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has no columns: shape {array.shape}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {array.shape[0]}")
    if not all_finite(array):
        raise ValueError(
            f"{name} contains NaN or infinite values"
            + (" (or values too large for float32)" if dtype is np.float32 else "")
        )
    return array


def as_vector(values: npt.ArrayLike, name: str, *, size: int | None = None) -> FloatArray:
    """A finite 1-D float64 array (of the given size, if any), else ValueError."""
    array: FloatArray = _float_array(values, name, np.float64, 1, "1-D")
    if size is not None and array.shape[0] != size:
        raise ValueError(f"{name} must have {size} entries, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def positive_int(value: object, name: str) -> int:
    """``value`` as an int ≥ 1 (bools refused), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_meta(meta: Mapping[str, Any], kind: str) -> None:
    """Raise ValueError unless ``meta`` is a version-1 profile of ``kind``."""
    if meta.get("kind") != kind:
        raise ValueError(f"profile meta is for kind {meta.get('kind')!r}, expected {kind!r}")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{kind} profile meta has no integer version: {version!r}")
    if version > PROFILE_VERSION:
        raise ValueError(
            f"{kind} profile version {version} is newer than this code supports "
            f"({PROFILE_VERSION}); upgrade assay to read it"
        )
    if version < 1:
        raise ValueError(f"{kind} profile version {version} is invalid")


def array_field(
    arrays: Mapping[str, np.ndarray], key: str, kind: str, *, ndim: int, dtype: type[np.generic]
) -> np.ndarray:
    """``arrays[key]`` checked for rank and dtype (exact dtype: round trips are bit-exact)."""
    if key not in arrays:
        raise ValueError(f"{kind} profile is missing array {key!r}")
    array = np.asarray(arrays[key])
    if array.ndim != ndim or array.dtype != np.dtype(dtype):
        raise ValueError(
            f"{kind} profile array {key!r} must be {ndim}-D {np.dtype(dtype)}, "
            f"got {array.ndim}-D {array.dtype}"
        )
    return array
