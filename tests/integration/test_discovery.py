"""Health, reflection, ModelService and the Prometheus endpoint of a real server."""

import asyncio
import shutil
import subprocess
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from assay.server.app import AssayServer, create_server
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc
from tests.conftest import SAMPLES, demo_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


async def test_health_is_not_serving_before_start_and_serving_after() -> None:
    app = await create_server(demo_settings())
    try:
        names = ("", "assay.v1.InferenceService", "assay.v1.ModelService", "assay.model.digits_cnn")
        await app.server.start()  # transport up, models not yet published
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            assert [await health_of(channel, n) for n in names] == [NOT_SERVING] * 4
            await app.publish_health()
            assert [await health_of(channel, n) for n in names] == [SERVING] * 4
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await health_of(channel, "assay.model.nope")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await app.stop(0)


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="assay.v1.InferenceService"
        )

    responses = [r async for r in stub.ServerReflectionInfo(requests())]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"assay.v1.InferenceService", "assay.v1.ModelService", "grpc.health.v1.Health"} <= names
    assert responses[1].file_descriptor_response.file_descriptor_proto


async def test_list_and_get_model(channel: grpc.aio.Channel) -> None:
    stub = models_pb2_grpc.ModelServiceStub(channel)
    listed = await stub.ListModels(models_pb2.ListModelsRequest())
    assert [m.name for m in listed.models] == ["digits_cnn"]
    model = (
        await stub.GetModel(
            models_pb2.GetModelRequest(model=common_pb2.ModelRef(name="digits_cnn"))
        )
    ).model
    assert (
        model.ready and model.backend == "onnx" and model.task == models_pb2.MODEL_TASK_CLASSIFIER
    )
    assert list(model.labels) == [str(i) for i in range(10)]
    assert model.inputs[0].name == "image" and list(model.inputs[0].shape) == [1, 28, 28]
    roles = {o.name: o.role for o in model.outputs}
    assert roles == {"logits": "logits", "features": "features", "feature_map": "feature_map"}
    assert model.preprocessing.color == models_pb2.COLOR_MODE_GRAY
    assert model.max_batch_size == 32


async def test_metrics_endpoint_has_the_named_series_and_passes_promtool(
    server: AssayServer, channel: grpc.aio.Channel
) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    image = common_pb2.Image(encoded=SAMPLES[0].read_bytes())
    request = inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name="digits_cnn"), images=[image]
    )
    await asyncio.gather(*(stub.Predict(request) for _ in range(8)))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Predict(
            inference_pb2.PredictRequest(model=common_pb2.ModelRef(name="x"), images=[image])
        )
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    labels = 'grpc_method="Predict",grpc_service="assay.v1.InferenceService",grpc_type="unary"'
    assert f"grpc_server_started_total{{{labels}}} 9.0" in text
    assert f'grpc_server_handled_total{{grpc_code="OK",{labels}}} 8.0' in text
    assert f'grpc_server_handled_total{{grpc_code="NOT_FOUND",{labels}}} 1.0' in text
    assert f"grpc_server_handling_seconds_count{{{labels}}} 9.0" in text
    for series in (
        'assay_batch_size_bucket{le="1.0",model="digits_cnn"}',
        'assay_batch_queue_depth{model="digits_cnn"}',
        'assay_backend_inference_seconds_count{backend="onnx",model="digits_cnn"}',
        'assay_preprocess_seconds_count{model="digits_cnn"}',
        'assay_model_ready{model="digits_cnn"} 1.0',
        'assay_predicted_images_total{model="digits_cnn"} 8.0',
    ):
        assert series in text, series
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (make test installs Debian's prometheus package)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
