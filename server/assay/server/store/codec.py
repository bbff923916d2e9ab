"""Encodings for what a job store keeps: strict JSON objects and .npz arrays.

Both are chosen to outlive SQLite: strict JSON is what PostgreSQL's jsonb
accepts, and .npz bytes read back without pickle, so a stored unit can never
run code when it is loaded.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from assay.server.errors import InvalidArgumentError

# np.savez's own parameter names; arrays so named would be taken as arguments.
_RESERVED_ARRAY_NAMES = frozenset({"file", "allow_pickle"})


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):  # np.int64, np.float32, np.bool_: common in metrics.
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def dump_json(value: Mapping[str, Any], what: str) -> str:
    """Encodes a JSON object strictly: no NaN or infinity, no unknown types.

    Args:
        value: The object to encode; numpy scalars become Python numbers.
        what: What the value is, for the error message.

    Returns:
        The JSON text.

    Raises:
        InvalidArgumentError: The value is not a dict or not strict JSON.
    """
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{what} is not strict JSON: {exc}") from exc


def pack_arrays(arrays: Mapping[str, npt.ArrayLike]) -> bytes:
    """Serialises named arrays as .npz bytes, dtype and shape kept exactly.

    Raises:
        InvalidArgumentError: A name is empty or reserved, or an array holds
            Python objects (those would need pickle to store).
    """
    named: dict[str, npt.NDArray[Any]] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name in _RESERVED_ARRAY_NAMES:
            raise InvalidArgumentError(f"invalid array name {name!r}")
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:  # e.g. ragged nested lists
            raise InvalidArgumentError(f"array {name!r} is not an array: {exc}") from exc
        if array.dtype.hasobject:
            raise InvalidArgumentError(
                f"array {name!r} has dtype {array.dtype}, which holds Python objects; "
                "only plain numeric, bool and fixed-width string arrays can be stored"
            )
        named[name] = array
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **named)
    return buffer.getvalue()


def unpack_arrays(blob: bytes) -> dict[str, npt.NDArray[Any]]:
    """Reads arrays written by pack_arrays, never unpickling anything."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}
