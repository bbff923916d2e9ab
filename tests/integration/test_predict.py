"""Predict through a real grpc.aio server equals a direct onnxruntime call."""

import asyncio

import grpc
import numpy as np
import onnxruntime as ort
from PIL import Image

from assay.server.app import AssayServer
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from assay.v1.tensor_codec import from_array, to_array
from tests.conftest import DIGITS_ONNX, SAMPLES


def reference_logits(paths: list) -> tuple[np.ndarray, np.ndarray]:
    """Independent preprocessing ((x/255 - 0.5) / 0.5, NCHW) and a direct onnxruntime run."""
    batch = np.stack([np.asarray(Image.open(p).convert("L"), np.float32) for p in paths])
    batch = ((batch / 255.0 - 0.5) / 0.5)[:, None]
    session = ort.InferenceSession(str(DIGITS_ONNX), providers=["CPUExecutionProvider"])
    logits, features = session.run(["logits", "features"], {"image": batch.astype(np.float32)})
    return batch.astype(np.float32), np.concatenate([logits, features], axis=1)


def request(images: list, **kwargs: object) -> inference_pb2.PredictRequest:
    return inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name="digits_cnn"), images=images, **kwargs
    )


async def test_predict_equals_direct_onnxruntime(channel: grpc.aio.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    images = [common_pb2.Image(encoded=p.read_bytes(), id=p.name) for p in SAMPLES]
    response = await stub.Predict(
        request(images, top_k=10, outputs=["logits", "features", "probabilities"])
    )
    _, ref = reference_logits(SAMPLES)
    ref_logits, ref_features = ref[:, :10], ref[:, 10:]
    ref_probs = np.exp(ref_logits - ref_logits.max(1, keepdims=True))
    ref_probs /= ref_probs.sum(1, keepdims=True)
    assert response.model.name == "digits_cnn" and response.model.version == "1"
    assert [r.id for r in response.results] == [p.name for p in SAMPLES]
    for row, result in enumerate(response.results):
        np.testing.assert_allclose(
            to_array(result.outputs["logits"]), ref_logits[row], rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose(
            to_array(result.outputs["features"]), ref_features[row], rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose(
            to_array(result.outputs["probabilities"]), ref_probs[row], atol=1e-5
        )
        order = np.argsort(-ref_probs[row], kind="stable")
        assert [c.index for c in result.top_k] == order.tolist()
        assert result.top_k[0].label == str(order[0])
        np.testing.assert_allclose(
            [c.probability for c in result.top_k], ref_probs[row][order], atol=1e-5
        )


async def test_tensor_and_raw_inputs_give_the_same_answer(channel: grpc.aio.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    batch, _ = reference_logits(SAMPLES[:3])
    pixels = [np.asarray(Image.open(p).convert("L"), np.uint8) for p in SAMPLES[:3]]
    as_tensor = [common_pb2.Image(tensor=from_array(x)) for x in batch]
    as_raw = [
        common_pb2.Image(raw=common_pb2.RawImage(height=28, width=28, channels=1, data=p.tobytes()))
        for p in pixels
    ]
    a, b = await asyncio.gather(
        stub.Predict(request(as_tensor, outputs=["logits"])),
        stub.Predict(request(as_raw, outputs=["logits"])),
    )
    for x, y in zip(a.results, b.results, strict=True):
        np.testing.assert_allclose(
            to_array(x.outputs["logits"]), to_array(y.outputs["logits"]), atol=1e-4
        )


async def test_concurrent_requests_are_batched(
    server: AssayServer, channel: grpc.aio.Channel
) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    image = common_pb2.Image(encoded=SAMPLES[0].read_bytes())
    before = (
        server.metrics.registry.get_sample_value("assay_batch_size_count", {"model": "digits_cnn"})
        or 0
    )
    await asyncio.gather(*(stub.Predict(request([image])) for _ in range(64)))
    batches = (
        server.metrics.registry.get_sample_value("assay_batch_size_count", {"model": "digits_cnn"})
        - before
    )
    rows = server.metrics.registry.get_sample_value("assay_batch_size_sum", {"model": "digits_cnn"})
    assert rows >= 64
    assert batches < 64, "64 concurrent single-image requests should share batches"
