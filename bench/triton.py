"""Triton benchmark: Triton direct vs assay->Triton vs assay's in-process onnxruntime.

In one run, on the demo model (digits_cnn), batch-1 requests at concurrency
1, 16 and 64, the same preprocessed float32 tensor in every request:
  (a) tritonclient.grpc.aio straight to a real tritonserver (its Python
      backend running onnxruntime: the only backend the pip Triton ships);
  (b) assay with the Triton backend (assay batches, then calls Triton);
  (c) assay with the in-process onnxruntime backend.
Prints req/s and p50/p99 for each, then the ratios last.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
import yaml
from PIL import Image

from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from assay.v1.tensor_codec import from_array
from bench._load import ROOT, LoadResult, ServerProcess, closed_loop

sys.path.insert(0, str(ROOT / "deploy" / "triton"))
import local_triton

SAMPLE = sorted((ROOT / "deploy" / "samples" / "digits").glob("*.png"))[0]
MANIFEST = yaml.safe_load(
    (ROOT / "deploy" / "triton" / "model_repository" / "digits_cnn" / "assay.yaml").read_text()
)
INPUT = MANIFEST["input"]
OUTPUTS = {"logits": "logits"}


def sample_tensor() -> np.ndarray:
    pixels = np.asarray(Image.open(SAMPLE).convert("L"), np.float32)
    return ((pixels / 255 - 0.5) / 0.5)[None].astype(np.float32)  # (1, 28, 28)


async def load_triton(url: str, concurrency: list[int], seconds: float) -> list[LoadResult]:
    client = triton_aio.InferenceServerClient(url)
    tensor = sample_tensor()[None]
    outputs = [triton_grpc.InferRequestedOutput("logits")]

    async def call() -> object:
        inp = triton_grpc.InferInput("image", list(tensor.shape), "FP32")
        inp.set_data_from_numpy(tensor)
        return await client.infer("digits_cnn", [inp], outputs=outputs)

    try:
        return [await closed_loop("triton direct", call, c, seconds) for c in concurrency]
    finally:
        await client.close()


async def load_assay(
    port: int, model: str, name: str, concurrency: list[int], seconds: float
) -> list[LoadResult]:
    request = inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name=model),
        images=[common_pb2.Image(tensor=from_array(sample_tensor()))],
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return [
            await closed_loop(name, lambda: stub.Predict(request), c, seconds) for c in concurrency
        ]


def assay_config(triton_url: str, folder: Path) -> Path:
    onnx = ROOT / "deploy" / "triton" / "model_repository" / "digits_cnn"
    config = {
        "grpc": {"port": 0},
        "metrics": {"port": 0},
        "models": [
            {
                "name": "digits_onnx",
                "path": str(onnx / "1" / "model.onnx"),
                "labels_file": str(onnx / "labels.txt"),
                "input": INPUT,
                "outputs": OUTPUTS,
            },
            {
                "name": "digits_triton",
                "backend": "triton",
                "triton": {"url": triton_url, "model": "digits_cnn"},
                "input": INPUT,
                "outputs": OUTPUTS,
            },
        ],
    }
    path = folder / "assay.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each load run")
    args = parser.parse_args()
    concurrency = [1, 16, 64]
    with tempfile.TemporaryDirectory() as tmp:
        repository = local_triton.generate_cpu_repository(
            out=Path(tmp) / "repo", only=("digits_cnn",)
        )
        triton = local_triton.TritonProcess(repository, log_path=Path(tmp) / "triton.log").start(
            120
        )
        assay = None
        try:
            direct = asyncio.run(load_triton(triton.grpc_url, concurrency, args.seconds))
            assay = ServerProcess(
                [
                    "-m",
                    "assay.client",
                    "serve",
                    "--config",
                    str(assay_config(triton.grpc_url, Path(tmp))),
                ]
            )
            via_triton = asyncio.run(
                load_assay(
                    assay.port, "digits_triton", "assay -> triton", concurrency, args.seconds
                )
            )
            in_process = asyncio.run(
                load_assay(
                    assay.port, "digits_onnx", "assay onnxruntime", concurrency, args.seconds
                )
            )
        finally:
            if assay is not None:
                assay.close()
            triton.stop()
    for results in (direct, via_triton, in_process):
        for r in results:
            print(r.line())
    p50 = {
        name: float(np.percentile(rs[0].latencies_s, 50)) * 1000
        for name, rs in (("direct", direct), ("triton", via_triton), ("onnx", in_process))
    }
    print("== ratios (ours/baseline) ==")
    overhead = p50["triton"] - p50["direct"]
    print(f"assay-triton p50 overhead over triton-direct at c=1: {overhead:+.2f} ms")
    print(f"assay-triton / triton-direct (req/s, c=64): {via_triton[-1].rps / direct[-1].rps:.2f}")
    print(f"assay-onnx / triton-direct (req/s, c=64): {in_process[-1].rps / direct[-1].rps:.2f}")


if __name__ == "__main__":
    main()
