"""Bad input gets the documented status code and a message; the server keeps serving."""

import asyncio
import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from assay.server.app import create_server
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc
from assay.v1.tensor_codec import from_array
from tests.conftest import SAMPLES, demo_settings

OK_IMAGE = common_pb2.Image(encoded=SAMPLES[0].read_bytes())


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()[:200]


def req(images: list, model: str = "digits_cnn", **kwargs: object) -> inference_pb2.PredictRequest:
    return inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name=model), images=images, **kwargs
    )


CASES = [
    (
        "garbage bytes",
        req([common_pb2.Image(encoded=b"\x00garbage")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a supported image format",
    ),
    (
        "truncated png",
        req([common_pb2.Image(encoded=truncated_png())]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "truncated",
    ),
    (
        "zero-size encoded",
        req([common_pb2.Image(encoded=b"")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "encoded image is empty",
    ),
    (
        "zero-size raw",
        req([common_pb2.Image(raw=common_pb2.RawImage(height=0, width=5, channels=3))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "zero size",
    ),
    (
        "100 MP png header",
        req([common_pb2.Image(encoded=png_claiming(10_000, 10_000))]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "exceeds the limit",
    ),
    (
        "raw bytes mismatch",
        req([common_pb2.Image(raw=common_pb2.RawImage(height=2, width=2, channels=3, data=b"12"))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs 12",
    ),
    (
        "wrong tensor shape",
        req([common_pb2.Image(tensor=from_array(np.zeros((28, 28), np.float32)))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "shape is [28, 28]",
    ),
    (
        "wrong tensor dtype",
        req([common_pb2.Image(tensor=from_array(np.zeros((1, 28, 28), np.float64)))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "dtype is float64",
    ),
    (
        "NaN tensor",
        req([common_pb2.Image(tensor=from_array(np.full((1, 28, 28), np.nan, np.float32)))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NaN",
    ),
    (
        "unknown model",
        req([OK_IMAGE], model="resnet9000"),
        grpc.StatusCode.NOT_FOUND,
        "registered models: digits_cnn",
    ),
    (
        "empty model name",
        req([OK_IMAGE], model=""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model.name is empty",
    ),
    ("empty batch", req([]), grpc.StatusCode.INVALID_ARGUMENT, "no images"),
    ("oversized batch", req([OK_IMAGE] * 257), grpc.StatusCode.INVALID_ARGUMENT, "at most 256"),
    (
        "unknown output",
        req([OK_IMAGE], outputs=["attention"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no output 'attention'",
    ),
    (
        "second image bad",
        req([OK_IMAGE, common_pb2.Image(encoded=b"xx")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "image 1:",
    ),
]


@pytest.mark.parametrize(("name", "request_", "code", "message"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_status_and_server_keeps_serving(
    channel: grpc.aio.Channel,
    name: str,
    request_: inference_pb2.PredictRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(request_)
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()
    ok = await stub.Predict(req([OK_IMAGE]))
    assert ok.results[0].top_k


async def test_unknown_model_on_get_model(channel: grpc.aio.Channel) -> None:
    stub = models_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetModel(
            models_pb2.GetModelRequest(model=common_pb2.ModelRef(name="digits_cnn", version="7"))
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "versions: 1" in info.value.details()


async def test_message_over_the_size_limit_is_resource_exhausted() -> None:
    app = await create_server(demo_settings(grpc={"port": 0, "max_message_mb": 1}))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{app.port}", options=[("grpc.max_send_message_length", 8 << 20)]
        ) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            big = common_pb2.Image(encoded=b"\x89PNG" + b"\0" * (2 << 20))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Predict(req([big]))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await stub.Predict(req([OK_IMAGE]))).results
    finally:
        await app.stop(0)


async def test_full_queue_is_resource_exhausted_and_recovers() -> None:
    settings = demo_settings(
        batching={"max_batch_size": 1, "max_queue": 2, "max_delay_ms": 0, "max_inflight_batches": 1}
    )
    app = await create_server(settings)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            calls = [stub.Predict(req([OK_IMAGE])) for _ in range(40)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
            assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert any(isinstance(r, inference_pb2.PredictResponse) for r in results)
            assert (await stub.Predict(req([OK_IMAGE]))).results
    finally:
        await app.stop(0)


async def test_deadline_passed_while_queued_is_deadline_exceeded() -> None:
    app = await create_server(
        demo_settings(batching={"max_delay_ms": 400, "flush_when_idle": False})
    )
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Predict(req([OK_IMAGE]), timeout=0.1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.sleep(0.5)
            runs = app.metrics.registry.get_sample_value(
                "assay_batch_size_count", {"model": "digits_cnn"}
            )
            assert not runs, "an expired request must not reach the backend"
    finally:
        await app.stop(0)
