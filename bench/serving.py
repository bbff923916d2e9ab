"""Serving benchmark: assay Predict vs a bare gRPC echo server vs direct onnxruntime.

In one run, on the committed digits_cnn demo model with PNG payloads:
  (a) onnxruntime called directly at the batch sizes the batcher forms;
  (b) assay Predict, batch-1 requests at concurrency 1, 16, 64 through real gRPC
      (server in a child process), with batching on, and with batching off
      (max_batch_size 1) at concurrency 64;
  (c) a bare grpc.aio echo server returning an equally sized response.
Prints req/s, p50/p99 and the mean formed batch size, then the ratios last.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time

import grpc
import numpy as np
from PIL import Image

from assay.server.models.onnx_backend import OnnxBackend
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from bench._load import ROOT, LoadResult, ServerProcess, closed_loop, scrape

MODEL = ROOT / "deploy" / "triton" / "model_repository" / "digits_cnn" / "1" / "model.onnx"
SAMPLE = sorted((ROOT / "deploy" / "samples" / "digits").glob("*.png"))[0]


def onnxruntime_direct(batch_sizes: list[int], seconds: float) -> dict[int, float]:
    """Images/s of session.run on preprocessed batches (no gRPC, no preprocessing)."""
    backend = OnnxBackend(MODEL, intra_op_threads=0)
    pixels = np.asarray(Image.open(io.BytesIO(SAMPLE.read_bytes())).convert("L"), np.float32)
    one = ((pixels / 255 - 0.5) / 0.5)[None, None]
    rates = {}
    for size in batch_sizes:
        batch = {"image": np.repeat(one, size, axis=0)}
        for _ in range(10):
            backend.run_sync(batch)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            backend.run_sync(batch)
            runs += 1
        rates[size] = runs * size / (time.perf_counter() - start)
    return rates


async def load_assay(
    port: int, concurrency: list[int], seconds: float, name: str
) -> list[LoadResult]:
    request = inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name="digits_cnn"),
        images=[common_pb2.Image(encoded=SAMPLE.read_bytes())],
    )
    results = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for c in concurrency:
            results.append(await closed_loop(name, lambda: stub.Predict(request), c, seconds))
    return results


def mean_batch(before: dict[str, float], after: dict[str, float]) -> float:
    key_sum, key_count = (
        'assay_batch_size_sum{model="digits_cnn"}',
        'assay_batch_size_count{model="digits_cnn"}',
    )
    count = after[key_count] - before.get(key_count, 0)
    return (after[key_sum] - before.get(key_sum, 0)) / count if count else float("nan")


def run_assay(
    concurrency: list[int], seconds: float, batching: bool
) -> list[tuple[LoadResult, float]]:
    env = {"ASSAY_GRPC__PORT": "0", "ASSAY_METRICS__PORT": "0", "ASSAY_LOG_LEVEL": "INFO"}
    if not batching:
        env["ASSAY_BATCHING__MAX_BATCH_SIZE"] = "1"
    server = ServerProcess(["-m", "assay.client", "serve"], env)
    metrics_port = server.wait_for(r"metrics on http://[\d.]+:(\d+)/metrics")
    name = "assay (batching on)" if batching else "assay (batching off)"
    out = []
    try:
        for c in concurrency:
            before = scrape(metrics_port)
            (result,) = asyncio.run(load_assay(server.port, [c], seconds, name))
            out.append((result, mean_batch(before, scrape(metrics_port))))
    finally:
        server.close()
    return out


def echo_response() -> bytes:
    """A PredictResponse shaped like assay's for one image with top-5."""
    response = inference_pb2.PredictResponse(
        model=common_pb2.ModelRef(name="digits_cnn", version="1")
    )
    result = response.results.add()
    for i in range(5):
        result.top_k.add(index=i, label=str(i), probability=0.2)
    return response.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each load run")
    args = parser.parse_args()
    concurrency = [1, 16, 64]

    print("== (a) onnxruntime direct, preprocessed batches ==")
    ort_rates = onnxruntime_direct([1, 8, 16, 32], args.seconds / 2)
    for size, rate in ort_rates.items():
        print(f"onnxruntime batch={size:<3} {rate:9.0f} img/s")

    print("== (c) bare grpc.aio echo server (transport ceiling) ==")
    echo = ServerProcess(["bench/echo_server.py"], stdin=echo_response())
    try:
        echo_results = asyncio.run(load_assay(echo.port, concurrency, args.seconds, "echo"))
    finally:
        echo.close()
    for r in echo_results:
        print(r.line())

    print("== (b) assay Predict, batch-1 requests ==")
    on = run_assay(concurrency, args.seconds, batching=True)
    for r, mean in on:
        print(r.line(f" mean batch {mean:5.1f}"))
    off = run_assay([64], args.seconds, batching=False)
    for r, mean in off:
        print(r.line(f" mean batch {mean:5.1f}"))

    assay64, mean64 = on[-1]
    echo64 = echo_results[-1]
    formed = min(ort_rates, key=lambda s: abs(s - mean64))
    print("== ratios (ours/baseline) ==")
    print(f"batching on/off at c=64: {assay64.rps / off[0][0].rps:.2f}")
    ratio = assay64.rps / ort_rates[formed]
    print(f"assay/onnxruntime (c=64 req/s over direct img/s at batch {formed}): {ratio:.3f}")
    print(f"assay/echo (c=64): {assay64.rps / echo64.rps:.2f}")


if __name__ == "__main__":
    main()
