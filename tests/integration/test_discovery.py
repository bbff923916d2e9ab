"""Health, reflection, ModelService and the Prometheus endpoint of a real server."""

import asyncio
import json
import shutil
import subprocess
import urllib.request

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from assay.server.app import AssayServer, create_server
from assay.server.services.reflection import v1_file
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc
from tests.conftest import ROOT, SAMPLES, demo_settings

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


async def test_reflection_v1_answers_like_v1alpha(channel: grpc.aio.Channel) -> None:
    # A v1 client on the wire: v1 message classes from the v1 descriptor, v1 method path.
    file = v1_file(descriptor_pool.Default())
    request_type = message_factory.GetMessageClass(
        file.message_types_by_name["ServerReflectionRequest"]
    )
    response_type = message_factory.GetMessageClass(
        file.message_types_by_name["ServerReflectionResponse"]
    )
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )

    async def requests():  # type: ignore[no-untyped-def]
        yield request_type(list_services="")
        yield request_type(file_containing_symbol="assay.v1.JobService")
        yield request_type(file_containing_symbol="grpc.reflection.v1.ServerReflection")

    listed, jobs_file, v1_itself = [r async for r in call(requests())]
    names = {s.name for s in listed.list_services_response.service}
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
            "assay.v1.JobService", "grpc.health.v1.Health"} <= names  # fmt: skip
    first = descriptor_pb2.FileDescriptorProto.FromString(
        jobs_file.file_descriptor_response.file_descriptor_proto[0]
    )
    assert first.name == "assay/v1/jobs.proto"
    list_jobs = next(m for m in first.message_type if m.name == "ListJobsRequest")
    assert {f.name for f in list_jobs.field} >= {"page_size", "page_token"}
    reflected = descriptor_pb2.FileDescriptorProto.FromString(
        v1_itself.file_descriptor_response.file_descriptor_proto[0]
    )
    assert (reflected.package, reflected.service[0].name) == (
        "grpc.reflection.v1",
        "ServerReflection",
    )


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
async def test_buf_curl_reflects_and_calls_with_either_protocol(
    server: AssayServer, protocol: str
) -> None:
    """buf curl (Go, connectrpc's reflection client) is an independent client of both."""
    buf = ROOT / ".buf" / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        pytest.skip("buf is not installed: run `make buf-lint`")
    base = f"http://127.0.0.1:{server.port}"
    common = [str(buf), "curl", "--protocol", "grpc", "--http2-prior-knowledge"]

    async def run(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            *common, "--reflect-protocol", protocol, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        return out.decode()

    services = (await run("--list-services", base)).split()
    assert "assay.v1.ModelService" in services and "assay.v1.JobService" in services
    got = json.loads(await run("-d", '{"model": {"name": "digits_cnn"}}',
                               f"{base}/assay.v1.ModelService/GetModel"))  # fmt: skip
    assert got["name"] == "digits_cnn" and got["task"] == "MODEL_TASK_CLASSIFIER"


async def test_list_and_get_model(channel: grpc.aio.Channel) -> None:
    stub = models_pb2_grpc.ModelServiceStub(channel)
    listed = await stub.ListModels(models_pb2.ListModelsRequest())
    assert [m.name for m in listed.models] == ["digits_cnn"]
    model = await stub.GetModel(
        models_pb2.GetModelRequest(model=common_pb2.ModelRef(name="digits_cnn"))
    )
    assert isinstance(model, models_pb2.ModelInfo)  # the resource itself, no wrapper
    assert model == listed.models[0]
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
