"""AI-generated detection benchmark: DetectGenerated vs the detector's raw onnxruntime throughput.

In one run, on 1024x768 JPEG photos (made from the photos bundled with
scikit-learn), for two detectors served by assay in a child process:

* ``aigen_demo`` (the committed 64x64 demo detector, up to 16 crops), and
* a CNNDetection-style ResNet-50 (random weights, exported by
  deploy/models/export_cnndetection.py; 224x224, up to 8 crops), the size of
  detector used in practice;

it measures DetectGenerated images/s with the ``crops`` and ``resize``
policies and with stability (six re-encoded variants) off and on, at a fixed
request concurrency. The ceiling of each configuration is the raw detector's
batched ``session.run`` throughput on the same number of model inputs per
image (crops of the image and of its variants, counted with assay's own
tiling), without gRPC, decoding or cropping. Ratios are printed last; the
final line is the ResNet-50 ``crops`` policy without stability.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import yaml
from PIL import Image

from assay.server.aigen.stability import variants
from assay.server.aigen.tiling import crops
from assay.server.models.onnx_backend import OnnxBackend
from assay.v1 import aigen_pb2, aigen_pb2_grpc, common_pb2
from bench._load import ROOT, LoadResult, ServerProcess, closed_loop

REPOSITORY = ROOT / "deploy" / "triton" / "model_repository"
SIZE = (768, 1024)  # height, width


@dataclass(frozen=True)
class Detector:
    """A detector folder in the benchmark repository."""

    name: str
    onnx: Path
    side: int
    max_crops: int
    ceiling_batch: int


def photos(count: int) -> list[bytes]:
    """``count`` 1024x768 JPEG photos (q92) from scikit-learn's bundled sample images."""
    from sklearn.datasets import load_sample_images

    sources = load_sample_images().images
    out = []
    for i in range(count):
        source = sources[i % len(sources)]
        h, w = source.shape[:2]
        # a different region per photo, then up-sampled to the benchmark size
        top, left = (i * 37) % (h // 4), (i * 53) % (w // 4)
        region = source[top : top + 3 * h // 4, left : left + 3 * w // 4]
        photo = cv2.resize(region, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_CUBIC)
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="JPEG", quality=92)
        out.append(buffer.getvalue())
    return out


def inputs_per_image(detector: Detector, jpeg: bytes, stability: bool, policy: str) -> int:
    """Model inputs assay runs for one image: its crops (and its variants' crops)."""
    if policy == "resize":
        return 7 if stability else 1
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    images = [image, *(variants(image).values() if stability else [])]
    size = (detector.side, detector.side)
    return sum(len(crops(i, size, detector.max_crops).boxes) for i in images)


def ceiling(detector: Detector, seconds: float) -> float:
    """Model inputs per second of batched session.run on preprocessed random crops."""
    backend = OnnxBackend(detector.onnx, intra_op_threads=0)
    rng = np.random.default_rng(0)
    shape = (detector.ceiling_batch, 3, detector.side, detector.side)
    batch = {"image": rng.standard_normal(shape).astype(np.float32)}
    backend.run_sync(batch)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        backend.run_sync(batch)
        runs += 1
    return runs * detector.ceiling_batch / (time.perf_counter() - start)


def build_repository(work: Path) -> list[Detector]:
    """aigen_demo (crops and resize) and a random CNNDetection ResNet-50, in one repository."""
    repo = work / "repository"
    demo = REPOSITORY / "aigen_demo"
    shutil.copytree(demo, repo / "aigen_demo")
    shutil.copytree(demo, repo / "aigen_demo_resize")
    manifest = yaml.safe_load((demo / "assay.yaml").read_text())
    manifest.update(name="aigen_demo_resize", aigen={**manifest["aigen"], "policy": "resize"})
    (repo / "aigen_demo_resize" / "assay.yaml").write_text(yaml.safe_dump(manifest))
    sys.path.insert(0, str(ROOT / "deploy" / "models"))
    import torch
    from export_cnndetection import ResNet50, export

    torch.manual_seed(0)
    checkpoint = work / "cnndetection_random.pth"
    torch.save({"model": ResNet50().state_dict()}, checkpoint)
    export(checkpoint, repo, "cnndetection_rn50")
    rn50 = yaml.safe_load((repo / "cnndetection_rn50" / "assay.yaml").read_text())
    rn50_resize = {**rn50, "name": "cnndetection_rn50_resize"}
    rn50_resize["aigen"] = {**rn50["aigen"], "policy": "resize"}
    shutil.copytree(repo / "cnndetection_rn50", repo / "cnndetection_rn50_resize")
    (repo / "cnndetection_rn50_resize" / "assay.yaml").write_text(yaml.safe_dump(rn50_resize))
    return [
        Detector("aigen_demo", demo / "1" / "model.onnx", 64, manifest["aigen"]["max_crops"], 64),
        Detector(
            "cnndetection_rn50",
            repo / "cnndetection_rn50" / "1" / "model.onnx",
            224,
            rn50["aigen"]["max_crops"],
            16,
        ),
    ]


async def load(
    port: int, model: str, jpegs: list[bytes], stability: bool, concurrency: int, seconds: float
) -> LoadResult:
    """Closed-loop DetectGenerated calls of one image each."""
    requests = [
        aigen_pb2.DetectGeneratedRequest(
            images=[common_pb2.Image(encoded=j)],
            detectors=[common_pb2.ModelRef(name=model)],
            stability=stability,
        )
        for j in jpegs
    ]
    turn = iter(range(1 << 62))
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = aigen_pb2_grpc.AigenServiceStub(channel)

        def call() -> grpc.aio.UnaryUnaryCall:  # type: ignore[type-arg]
            return stub.DetectGenerated(requests[next(turn) % len(requests)], timeout=300)

        name = f"{model} stability={'on' if stability else 'off'}"
        return await closed_loop(name, call, concurrency, seconds, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per configuration")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--photos", type=int, default=8)
    args = parser.parse_args()
    jpegs = photos(args.photos)
    with tempfile.TemporaryDirectory(prefix="assay-bench-aigen-") as tmp:
        work = Path(tmp)
        detectors = build_repository(work)
        print("== raw detector ceiling (batched session.run, preprocessed crops) ==")
        rates = {d.name: ceiling(d, args.seconds / 2) for d in detectors}
        for d in detectors:
            print(f"{d.name:<20} batch={d.ceiling_batch:<3} {rates[d.name]:9.1f} inputs/s")
        env = {
            "ASSAY_GRPC__PORT": "0",
            "ASSAY_METRICS__ENABLED": "false",
            "ASSAY_MODEL_REPOSITORY": str(work / "repository"),
            "ASSAY_DATA__DIR": str(work / "data"),
            "ASSAY_LOG_LEVEL": "INFO",
        }
        server = ServerProcess(["-m", "assay.client", "serve"], env)
        ratios: list[tuple[str, float]] = []
        print(f"== DetectGenerated, 1 image of {SIZE[1]}x{SIZE[0]} per request, "
              f"concurrency {args.concurrency} ==")  # fmt: skip
        try:
            for d in detectors:
                for policy in ("resize", "crops"):
                    model = d.name if policy == "crops" else f"{d.name}_resize"
                    for stability in (True, False):
                        result = asyncio.run(
                            load(server.port, model, jpegs, stability, args.concurrency,
                                 args.seconds)
                        )  # fmt: skip
                        per_image = inputs_per_image(d, jpegs[0], stability, policy)
                        limit = rates[d.name] / per_image
                        ratio = result.rps / limit
                        print(
                            result.line(
                                f" {policy:<6} {per_image:3d} inputs/img  ceiling "
                                f"{limit:7.1f} img/s  ratio {ratio:.2f}"
                            )
                        )
                        ratios.append((f"{d.name} {policy} stability={stability}", ratio))
        finally:
            server.close()
    print("== ratios: DetectGenerated images/s / raw detector images/s on the same inputs ==")
    for label, ratio in ratios:
        print(f"{label:<48} {ratio:.2f}")


if __name__ == "__main__":
    main()
