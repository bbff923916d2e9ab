"""Graceful shutdown: calls in flight when stop() begins still complete."""

import asyncio

import grpc
import pytest

from assay.server.app import create_server
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests.conftest import SAMPLES, demo_settings


async def test_in_flight_calls_finish_during_the_grace_period() -> None:
    app = await create_server(
        demo_settings(batching={"max_delay_ms": 300, "flush_when_idle": False})
    )
    await app.start()
    request = inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name="digits_cnn"),
        images=[common_pb2.Image(encoded=SAMPLES[0].read_bytes())],
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        calls = [asyncio.ensure_future(stub.Predict(request, timeout=10)) for _ in range(5)]
        await asyncio.sleep(0.1)  # the calls now wait in the batcher
        await app.stop(grace_s=5)
        results = await asyncio.gather(*calls)
        assert all(r.results[0].top_k[0].label == SAMPLES[0].name[0] for r in results)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(request, timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
