import numpy as np
import pytest

from assay.server.inference import top_k
from assay.server.stats.softmax import softmax
from assay.v1 import common_pb2
from assay.v1.tensor_codec import DTYPES, from_array, to_array


@pytest.mark.parametrize("dtype", sorted({d.name for d in DTYPES.values()}))
def test_tensor_round_trip(dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    back = to_array(from_array(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.arange(4, dtype=">f4")
    tensor = from_array(array)
    assert tensor.data == np.arange(4, dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (common_pb2.Tensor(shape=[1]), "dtype is unset"),
        (
            common_pb2.Tensor(dtype=common_pb2.DATA_TYPE_FLOAT32, shape=[2], data=b"\0" * 4),
            "needs 8",
        ),
        (common_pb2.Tensor(dtype=common_pb2.DATA_TYPE_FLOAT32, shape=[-1], data=b""), "invalid"),
    ],
)
def test_inconsistent_tensors_are_rejected(tensor: common_pb2.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_array(tensor)


def test_unsupported_dtype_cannot_be_encoded() -> None:
    with pytest.raises(TypeError):
        from_array(np.zeros(2, dtype=np.complex64))


def test_softmax_matches_reference_and_is_stable() -> None:
    logits = np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    probs = softmax(logits, np.float32)
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, ref, rtol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)


def test_top_k_agrees_with_full_sort() -> None:
    rng = np.random.default_rng(1)
    probs = rng.random((6, 50)).astype(np.float32)
    indices, values = top_k(probs, 5)
    expected = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(probs, expected, 1))
    assert top_k(probs, 500)[0].shape == (6, 50)
