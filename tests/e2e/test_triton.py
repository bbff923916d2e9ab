"""assay -> real tritonserver: equality with onnxruntime, batching, outages and recovery."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assay.server.app import AssayServer, create_server
from assay.server.errors import ConfigError
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc
from assay.v1.tensor_codec import to_array
from tests.conftest import ROOT, SAMPLES, demo_settings
from tests.e2e.conftest import local_triton, start_triton, triton_entry

ONNX_ENTRY = demo_settings().models[0].model_dump(mode="json")
SERVING = health_pb2.HealthCheckResponse.SERVING


def settings_with(*entries: dict, **overrides: object):  # type: ignore[no-untyped-def]
    return demo_settings(models=[ONNX_ENTRY, *entries], **overrides)


def predict_request(model: str, count: int = len(SAMPLES), outputs=("logits", "features")):  # type: ignore[no-untyped-def]
    images = [
        common_pb2.Image(encoded=SAMPLES[i % len(SAMPLES)].read_bytes()) for i in range(count)
    ]
    return inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name=model), images=images, top_k=3, outputs=list(outputs)
    )


async def started(settings) -> AssayServer:  # type: ignore[no-untyped-def]
    app = await create_server(settings)
    await app.start()
    return app


async def health(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


def sample(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}{{{label_text}}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{label_text}}} missing"
    return float(match.group(1))


async def test_predict_through_triton_equals_onnxruntime(
    triton: local_triton.TritonProcess,
) -> None:
    app = await started(settings_with(triton_entry(triton.grpc_url)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            direct, via_triton = await asyncio.gather(
                stub.Predict(predict_request("digits_cnn")),
                stub.Predict(predict_request("digits_triton")),
            )
            for a, b in zip(direct.results, via_triton.results, strict=True):
                for key in ("logits", "features"):
                    np.testing.assert_allclose(
                        to_array(a.outputs[key]), to_array(b.outputs[key]), atol=1e-4
                    )
                assert [c.label for c in a.top_k] == [c.label for c in b.top_k]
            model = await models_pb2_grpc.ModelServiceStub(channel).GetModel(
                models_pb2.GetModelRequest(model=common_pb2.ModelRef(name="digits_triton"))
            )
            assert model.backend == "triton" and model.ready and model.status == ""
            assert list(model.labels) == [str(i) for i in range(10)], "labels come from Triton"
            assert list(model.inputs[0].shape) == [1, 28, 28] and model.max_batch_size == 32
    finally:
        await app.stop(0)


async def test_concurrent_requests_are_grouped_and_triton_batches(
    triton: local_triton.TritonProcess,
) -> None:
    # assay would batch up to 128; Triton's max_batch_size (64) caps it.
    entry = triton_entry(triton.grpc_url, batching={"max_batch_size": 128, "max_delay_ms": 5})
    app = await started(settings_with(entry))
    try:
        before = triton.metrics()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            models = models_pb2_grpc.ModelServiceStub(channel)
            info = await models.GetModel(
                models_pb2.GetModelRequest(model=common_pb2.ModelRef(name="digits_triton"))
            )
            assert info.max_batch_size == 64
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            await asyncio.gather(
                *(stub.Predict(predict_request("digits_triton", 1)) for _ in range(96))
            )
            large = await stub.Predict(
                predict_request("digits_triton", 256, outputs=("feature_map",))
            )
            assert to_array(large.results[-1].outputs["feature_map"]).shape == (64, 7, 7)
        after = triton.metrics()
        labels = {"model": "digits_cnn", "version": "1"}

        def delta(name: str) -> float:
            return sample(after, name, **labels) - sample(before, name, **labels)

        images, executions = delta("nv_inference_count"), delta("nv_inference_exec_count")
        assert images == 96 + 256
        assert executions < images, "Triton ran batches, not one image per execution"
        registry = app.metrics.registry
        calls = registry.get_sample_value("assay_batch_size_count", {"model": "digits_triton"})
        sent = registry.get_sample_value("assay_batch_size_sum", {"model": "digits_triton"})
        assert sent == 96 + 256 and calls < 96 + 4, "assay grouped requests into fewer Triton calls"
        within = registry.get_sample_value(
            "assay_batch_size_bucket", {"model": "digits_triton", "le": "64.0"}
        )
        assert within == calls, "no call exceeded Triton's max_batch_size"
    finally:
        await app.stop(0)


async def test_mismatch_with_triton_fails_at_start_naming_both_sides(
    triton: local_triton.TritonProcess,
) -> None:
    entry = triton_entry(triton.grpc_url)
    entry["input"] = {**entry["input"], "height": 32}
    with pytest.raises(ConfigError) as info:
        await create_server(settings_with(entry))
    assert "[1, 32, 28]" in str(info.value) and "[1, 28, 28]" in str(info.value)


async def test_triton_down_at_start_leaves_other_models_serving() -> None:
    dead = f"127.0.0.1:{local_triton.free_port()}"
    app = await started(settings_with(triton_entry(dead)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            assert await health(channel, "assay.model.digits_triton") != SERVING
            assert await health(channel, "assay.model.digits_cnn") == SERVING
            assert (
                app.metrics.registry.get_sample_value(
                    "assay_model_ready", {"model": "digits_triton"}
                )
                == 0
            )
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Predict(predict_request("digits_triton", 1), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "unreachable" in info.value.details() and time.monotonic() - start < 1
            assert (await stub.Predict(predict_request("digits_cnn", 1))).results
    finally:
        await app.stop(0)


async def wait_for_health(
    channel: grpc.aio.Channel, service: str, want: int, timeout_s: float
) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await health(channel, service) == want:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"{service} did not reach status {want} in {timeout_s}s")


async def test_outage_mid_traffic_is_unavailable_quickly_then_recovers(
    cpu_repository: Path, tmp_path: Path
) -> None:
    ports = {
        "grpc_port": local_triton.free_port(),
        "http_port": local_triton.free_port(),
        "metrics_port": local_triton.free_port(),
    }
    triton = start_triton(cpu_repository, tmp_path, **ports)
    app = await started(settings_with(triton_entry(triton.grpc_url)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            assert (await stub.Predict(predict_request("digits_triton", 4))).results
            triton.kill()
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Predict(predict_request("digits_triton", 4), timeout=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - start < 3, "no hang past the deadline"
            await wait_for_health(
                channel, "assay.model.digits_triton", health_pb2.HealthCheckResponse.NOT_SERVING, 5
            )
            assert (
                app.metrics.registry.get_sample_value(
                    "assay_model_ready", {"model": "digits_triton"}
                )
                == 0
            )
            assert (await stub.Predict(predict_request("digits_cnn", 1))).results, (
                "other models keep serving"
            )

            triton = start_triton(cpu_repository, tmp_path, **ports)
            await wait_for_health(channel, "assay.model.digits_triton", SERVING, 20)
            result = await stub.Predict(predict_request("digits_triton", 4))
            assert [r.top_k[0].label for r in result.results] == [p.name[0] for p in SAMPLES[:4]]
    finally:
        await app.stop(0)
        triton.stop()


async def test_robustness_suite_is_the_same_through_triton_and_onnxruntime(
    triton: local_triton.TritonProcess,
) -> None:
    """The same suite, inline, on the in-process model and on the Triton-served copy."""
    import json

    from assay.v1 import robustness_pb2, robustness_pb2_grpc

    app = await started(settings_with(triton_entry(triton.grpc_url)))
    attack = robustness_pb2.Attack(
        kind=robustness_pb2.ATTACK_KIND_SQUARE_LINF, epsilon=0.1, queries=60
    )
    suite = robustness_pb2.Suite(corruptions=["gaussian_noise", "contrast"], severities=[2, 4],
                                 perturbations=["translate"], attacks=[attack])  # fmt: skip
    images = [common_pb2.Image(encoded=p.read_bytes()) for p in SAMPLES]
    labels = [p.name[0] for p in SAMPLES]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = robustness_pb2_grpc.RobustnessServiceStub(channel)
            reports = {}
            for model in ("digits_cnn", "digits_triton"):
                request = robustness_pb2.ScoreRobustnessRequest(
                    model=common_pb2.ModelRef(name=model), images=images, labels=labels, suite=suite
                )
                reports[model] = json.loads((await stub.ScoreRobustness(request)).json)
    finally:
        await app.stop(0)
    onnx, via_triton = reports["digits_cnn"], reports["digits_triton"]
    assert via_triton["model"]["backend"] == "triton" and onnx["model"]["backend"] == "onnx"
    assert onnx["clean"]["error"] == via_triton["clean"]["error"]
    for name in ("gaussian_noise", "contrast"):
        assert onnx["corruptions"][name]["errors"] == via_triton["corruptions"][name]["errors"]
    assert onnx["perturbations"] == via_triton["perturbations"]
    a, b = onnx["attacks"][0], via_triton["attacks"][0]
    assert abs(a["robust_accuracy"]["value"] - b["robust_accuracy"]["value"]) <= 0.1
    assert b["score_calls"] <= 61


async def test_detect_generated_through_triton_equals_onnxruntime(
    triton: local_triton.TritonProcess,
) -> None:
    """The demo detector's crop scores and stability verdicts, in-process vs served by Triton."""
    import yaml

    from assay.v1 import aigen_pb2, aigen_pb2_grpc

    folder = ROOT / "deploy" / "triton" / "model_repository" / "aigen_demo"
    manifest = yaml.safe_load((folder / "assay.yaml").read_text())
    local = {**manifest, "path": str(folder / "1" / "model.onnx")}
    served = {
        **{k: v for k, v in manifest.items() if k != "path"},
        "name": "aigen_triton",
        "backend": "triton",
        "triton": {"url": triton.grpc_url, "model": "aigen_demo"},
    }
    app = await started(settings_with(local, served))
    eval_set = ROOT / "deploy" / "samples" / "aigen" / "eval"
    photos = [sorted((eval_set / group).glob("*.png"))[4] for group in ("gen_a", "gen_b", "real")]
    images = [common_pb2.Image(encoded=p.read_bytes(), id=p.parent.name) for p in photos]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = aigen_pb2_grpc.AigenServiceStub(channel)
            responses = [
                await stub.DetectGenerated(
                    aigen_pb2.DetectGeneratedRequest(
                        images=images,
                        detectors=[common_pb2.ModelRef(name=name)],
                        stability=True,
                        explain=True,
                    )
                )
                for name in ("aigen_demo", "aigen_triton")
            ]
    finally:
        await app.stop(0)
    direct, via_triton = (r.results for r in responses)
    assert len(direct) == len(via_triton) == 3
    for a, b in zip(direct, via_triton, strict=True):
        assert a.id == b.id and a.verdict == b.verdict
        assert abs(a.probability - b.probability) < 1e-5
        crops_a, crops_b = a.detectors[0].crops, b.detectors[0].crops
        assert [(c.top, c.left) for c in crops_a] == [(c.top, c.left) for c in crops_b]
        np.testing.assert_allclose(
            [c.probability for c in crops_a], [c.probability for c in crops_b], atol=1e-5
        )
        np.testing.assert_allclose(
            [v.log_odds for v in a.stability.variants],
            [v.log_odds for v in b.stability.variants],
            atol=1e-3,
        )
