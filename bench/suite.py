"""Suite benchmark: an end-to-end robustness job vs its generation + inference alone.

In one run, on the demo classifier and the held-out digits: (a) the whole
suite as a real job (JobManager, SQLite store, worker processes, batcher),
(b) generating the same corrupted images and perturbation frames alone, and
(c) scoring those pre-generated images alone through the same model. The
ratio e2e / (generation + inference) shows the job machinery's overhead
(target <= 1.1).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from assay.server.app import create_server
from assay.server.datasets import DatasetRoots, load_rgb
from assay.server.robustness.perturbations import perturbation_sequence
from assay.server.robustness.scoring import ModelScorer
from assay.server.robustness.suite import parse_suite
from assay.server.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "deploy" / "samples" / "digits_heldout"


async def run(preset: str, limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(grpc={"port": 0}, metrics={"enabled": False}, data={"dir": tmp})
        app = await create_server(settings)
        await app.start()
        await app.workers.ready()  # process start-up is a once-per-server cost, not per job
        try:
            spec = {"model": "digits_cnn", "dataset": str(DATA), "preset": preset,
                    "overrides": {"sample_limit": limit}}  # fmt: skip
            start = time.perf_counter()
            record = await app.jobs.start("robustness", spec)
            async for event in app.jobs.watch(record.id):
                final = event.record
            e2e = time.perf_counter() - start
            assert final.state.value == "succeeded", final.error

            suite = parse_suite(preset, {"sample_limit": limit})
            dataset = DatasetRoots([DATA]).open(DATA).subset(suite.sample_limit, suite.seed)
            images = [load_rgb(s.path, 10**8) for s in dataset.samples]
            start = time.perf_counter()
            generated = [images]
            for name in suite.corruptions:
                for severity in suite.severities:
                    generated.append(
                        await app.workers.corrupt_all(images, name, severity, suite.seed)
                    )
            for name in suite.perturbations:
                rng = np.random.default_rng([suite.seed, 7, zlib.crc32(name.encode())])
                generated.append(
                    [
                        f
                        for i in images
                        for f in perturbation_sequence(i, name, suite.perturbation_frames, rng)
                    ]
                )
            generation = time.perf_counter() - start
            scorer = ModelScorer(app.registry.get("digits_cnn"), app.preprocess_pool)
            start = time.perf_counter()
            for batch in generated:
                await scorer.scores(batch)
            inference = time.perf_counter() - start
        finally:
            await app.stop(0)
    print(f"{preset}: {len(images)} images, {len(generated)} image sets")
    print(f"  end-to-end job       {e2e:7.2f} s")
    print(f"  generation alone     {generation:7.2f} s")
    print(f"  inference alone      {inference:7.2f} s")
    print(f"suite {preset} e2e/(generation+inference): {e2e / (generation + inference):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    for preset in ("quick", "standard"):
        asyncio.run(run(preset, args.limit))


if __name__ == "__main__":
    main()
