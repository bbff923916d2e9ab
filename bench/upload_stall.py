"""Upload benchmark: how long a concurrent Predict waits while a large dataset is replaced.

One in-process server (the committed digits_cnn model, a temporary data
folder). A thread sends batch-1 Predict calls back to back and records each
latency; another thread uploads a dataset of FILES small files, then replaces
it. Any filesystem work done on the server's event loop (chunk writes, the
old version's rmtree) shows as a Predict that waited. Prints the worst and
p99 latency during the replace against the same figures with no upload,
ratios last.

    python -m bench.upload_stall [--files 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from assay.server.app import create_server
from assay.server.settings import load_settings
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc

ROOT = Path(os.environ.get("ASSAY_BENCH_ROOT") or Path(__file__).resolve().parents[1])
REPOSITORY = ROOT / "deploy" / "triton" / "model_repository"
SAMPLE = sorted((ROOT / "deploy" / "samples" / "digits").glob("*.png"))[0]


def make_dataset(folder: Path, files: int) -> None:
    for i in range(files):
        target = folder / f"c{i % 10}" / f"{i:06d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(SAMPLE.read_bytes())


def predict_latencies(port: int, stop: threading.Event) -> list[float]:
    request = inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name="digits_cnn"),
        images=[common_pb2.Image(encoded=SAMPLE.read_bytes())],
    )
    latencies = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        stub.Predict(request)
        while not stop.is_set():
            start = time.perf_counter()
            stub.Predict(request)
            latencies.append(time.perf_counter() - start)
    return latencies


def measure(port: int, action: threading.Thread | None, seconds: float) -> np.ndarray:
    stop = threading.Event()
    result: list[float] = []
    probe = threading.Thread(target=lambda: result.extend(predict_latencies(port, stop)))
    probe.start()
    if action is None:
        time.sleep(seconds)
    else:
        action.start()
        action.join()
        time.sleep(0.5)  # what the server does right after (old versions removed)
    stop.set()
    probe.join()
    return np.array(result)


def line(name: str, latencies: np.ndarray) -> str:
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    top = latencies.max() * 1e3
    calls = len(latencies)
    return f"{name:32s} calls={calls:6d} p50={p50:7.2f} ms p99={p99:8.2f} ms max={top:8.2f} ms"


async def main(files: int) -> None:
    with tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp:
        local = Path(tmp) / "local"
        make_dataset(local, files)
        data = {"dir": str(Path(tmp) / "data")}
        settings = load_settings(
            grpc={"port": 0}, metrics={"enabled": False}, data=data, model_repository=REPOSITORY
        )
        server = await create_server(settings)
        await server.start()
        target = f"127.0.0.1:{server.port}"

        def upload(replace: bool) -> threading.Thread:
            # In another process, so the client's own work does not compete for this GIL.
            code = (
                "import sys; from assay.client import Client; c = Client(sys.argv[1]); "
                "c.upload_dataset('many', sys.argv[2], replace=sys.argv[3] == '1'); c.close()"
            )
            command = [sys.executable, "-c", code, target, str(local), "1" if replace else "0"]
            return threading.Thread(target=subprocess.run, args=(command,), kwargs={"check": True})

        try:
            await asyncio.to_thread(upload(False).run)  # the version to be replaced
            idle = await asyncio.to_thread(measure, server.port, None, 3.0)
            during = await asyncio.to_thread(measure, server.port, upload(True), 0.0)
        finally:
            await server.stop(0)
    print(line("predict, no upload", idle))
    print(line(f"predict, replacing {files} files", during))
    print(f"worst predict during replace / idle: {during.max() / idle.max():.2f}")
    p99_ratio = np.percentile(during, 99) / np.percentile(idle, 99)
    print(f"p99 predict during replace / idle: {p99_ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().files))
