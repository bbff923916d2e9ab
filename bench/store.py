"""Store benchmark: the same server work on SQLite and on PostgreSQL, in one run.

Per engine, each with its own temporary data folder (and, for PostgreSQL, a
throwaway server from Debian's postgresql package with its production default
of fsync on; SQLite runs as the server runs it, WAL with synchronous=NORMAL):

1. job bookkeeping: `--units` finished units (each with a 1,000-float array)
   recorded through `put_unit` by the lease owner, from one thread, the way a
   job records them: units/s;
2. Predict with the OOD signal on the demo classifier (the profile lookup is a
   cached read plus a background etag check): `--predicts` sequential calls of
   one image through a real gRPC channel, p50 and p99;
3. the standard robustness suite as a real job on `--limit` (300) held-out digits
   (at 100 the suite lasts ~4 s and a second of noise moves the ratio by 25 %):
   wall time from start to SUCCEEDED.

The last line is the suite's wall time on PostgreSQL over SQLite (target: at
most 1.10, i.e. PostgreSQL adds no more than 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from assay.server.app import AssayServer, create_server
from assay.server.settings import load_settings
from assay.server.store import open_store
from assay.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests._postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "deploy" / "samples"
DIGITS = SAMPLES / "digits"
HELDOUT = SAMPLES / "digits_heldout"


@dataclass
class Figures:
    """What one engine measured."""

    units_per_s: float
    predict_p50_ms: float
    predict_p99_ms: float
    suite_s: float


def record_units(url: str, count: int) -> float:
    """Units recorded per second by one lease owner, through `put_unit`."""
    store = open_store(url)
    try:
        job = store.create("bench", {"units": count}, count)
        assert store.claim(job.id, "bench-owner", 60.0) is not None
        scores = np.random.default_rng(0).random(1000, dtype=np.float32)
        start = time.perf_counter()
        for index in range(count):
            meta = {"images": 1000, "accuracy": 0.9}
            store.put_unit(job.id, f"unit-{index}", meta, {"scores": scores}, owner="bench-owner")
        elapsed = time.perf_counter() - start
        assert store.get(job.id).done == count
        return count / elapsed
    finally:
        store.close()


async def wait_job(app: AssayServer, job_id: str) -> None:
    """Follows the job to its end; fails the benchmark when it did not succeed."""
    final = None
    async for event in app.jobs.watch(job_id):
        final = event.record
    assert final is not None and final.state.value == "succeeded", final


async def predict_latencies(app: AssayServer, count: int) -> list[float]:
    """Milliseconds of `count` sequential one-image Predict calls with the OOD signal."""
    image = common_pb2.Image(encoded=sorted(DIGITS.glob("*.png"))[0].read_bytes())
    request = inference_pb2.PredictRequest(
        model=common_pb2.ModelRef(name="digits_cnn"), images=[image], signals=["ood"]
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for _ in range(20):  # warm-up: first load of the profile, batcher, channel
            await stub.Predict(request)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            await stub.Predict(request)
            times.append((time.perf_counter() - start) * 1000)
    return times


async def serve_and_measure(url: str, data_dir: Path, predicts: int, limit: int) -> Figures:
    """Server work on one engine: Predict with OOD, then the standard suite."""
    settings = load_settings(
        grpc={"port": 0},
        metrics={"enabled": False},
        data={"dir": str(data_dir), "url": url, "roots": [str(SAMPLES)]},
    )
    app = await create_server(settings)
    await app.start()
    await app.workers.ready()  # process start-up is a once-per-server cost
    try:
        fit_spec = {"model": "digits_cnn", "dataset": str(HELDOUT), "sample_limit": 250, "seed": 1}
        fit = await app.jobs.start("ood_profile", fit_spec)
        await wait_job(app, fit.id)
        latencies = await predict_latencies(app, predicts)
        spec = {"model": "digits_cnn", "dataset": str(HELDOUT), "preset": "standard",
                "overrides": {"sample_limit": limit}}  # fmt: skip
        start = time.perf_counter()
        suite = await app.jobs.start("robustness", spec)
        await wait_job(app, suite.id)
        suite_s = time.perf_counter() - start
    finally:
        await app.stop(0)
    quantiles = statistics.quantiles(latencies, n=100)
    return Figures(0.0, statistics.median(latencies), quantiles[98], suite_s)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on a throwaway PostgreSQL server with fsync on."""
    server = PostgresServer(durable=True)
    try:
        yield server.create_database()
    finally:
        server.stop()


def measure(url: str, args: argparse.Namespace) -> Figures:
    """Every figure for one engine."""
    rate = record_units(url, args.units)
    with tempfile.TemporaryDirectory(prefix="assay-bench-store-") as tmp:
        figures = asyncio.run(serve_and_measure(url, Path(tmp), args.predicts, args.limit))
    figures.units_per_s = rate
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--predicts", type=int, default=500)
    parser.add_argument("--limit", type=int, default=300, help="held-out images in the suite")
    args = parser.parse_args()
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="assay-bench-sqlite-") as tmp:
        results["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'assay.sqlite3'}", args)
    with postgres_database() as url:
        results["postgres"] = measure(url, args)
    print(f"{'engine':10} {'units/s':>9} {'predict p50':>12} {'p99':>8} {'suite':>8}")
    for engine, f in results.items():
        print(
            f"{engine:10} {f.units_per_s:9.0f} {f.predict_p50_ms:9.2f} ms "
            f"{f.predict_p99_ms:5.2f} ms {f.suite_s:6.2f} s"
        )
    sqlite, postgres = results["sqlite"], results["postgres"]
    print(f"units/s postgres/sqlite: {postgres.units_per_s / sqlite.units_per_s:.2f}")
    print(f"predict+ood p50 postgres/sqlite: {postgres.predict_p50_ms / sqlite.predict_p50_ms:.2f}")
    print(
        f"standard suite wall time postgres/sqlite: {postgres.suite_s / sqlite.suite_s:.2f} "
        "(target <= 1.10)"
    )


if __name__ == "__main__":
    main()
