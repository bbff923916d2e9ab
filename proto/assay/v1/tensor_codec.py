"""numpy <-> assay.v1.Tensor, shared by the server and the SDK.

Hand-written (not generated): the one place that knows how dtypes map to
DataType and that Tensor bytes are little-endian, row-major.
"""

from __future__ import annotations

import numpy as np

from assay.v1 import common_pb2

DTYPES: dict[common_pb2.DataType.ValueType, np.dtype] = {
    common_pb2.DATA_TYPE_UINT8: np.dtype("<u1"),
    common_pb2.DATA_TYPE_INT8: np.dtype("<i1"),
    common_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    common_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
    common_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    common_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    common_pb2.DATA_TYPE_BOOL: np.dtype("?"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
MAX_DIMS = 8


def dtype_code(dtype: np.dtype) -> common_pb2.DataType.ValueType:
    """Numpy dtype -> DataType value (DATA_TYPE_UNSPECIFIED when unsupported)."""
    return _CODES.get(np.dtype(dtype).newbyteorder("="), common_pb2.DATA_TYPE_UNSPECIFIED)


def to_array(tensor: common_pb2.Tensor) -> np.ndarray:
    """Decode a Tensor; ValueError says what is inconsistent."""
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ValueError("tensor dtype is unset or unknown; set Tensor.dtype")
    shape = tuple(tensor.shape)
    if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
        raise ValueError(f"tensor shape {list(shape)} is invalid")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(tensor.data) != expected:
        raise ValueError(
            f"tensor data has {len(tensor.data)} bytes; shape {list(shape)} of "
            f"{dtype.name} needs {expected}"
        )
    array = np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def from_array(array: np.ndarray) -> common_pb2.Tensor:
    """Encode an array as a little-endian Tensor; TypeError for unsupported dtypes."""
    array = np.asarray(array)
    code = dtype_code(array.dtype)
    if code == common_pb2.DATA_TYPE_UNSPECIFIED:
        raise TypeError(f"cannot encode arrays of dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return common_pb2.Tensor(dtype=code, shape=list(array.shape), data=data)
