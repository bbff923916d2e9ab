"""Corrupted images made in worker processes, so the backend never waits on numpy.

The pool uses the forkserver start method: forking a process that holds
gRPC and onnxruntime threads is unsafe. Each task corrupts a chunk of
images with the same deterministic (seed, index, corruption, severity)
streams as `corrupt`, so results do not depend on how work is split.
Workers exit when the server does, even after ``kill -9`` (`lifeline`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from assay.server.robustness.corruptions import corrupt
from assay.server.robustness.lifeline import Lifeline, bind_to_server

CHUNK = 16


def _corrupt_chunk(
    images: list[np.ndarray], name: str, severity: int, seed: int, first_index: int
) -> list[np.ndarray]:
    return [
        corrupt(image, name, severity, seed=seed, index=first_index + offset)
        for offset, image in enumerate(images)
    ]


def _noop() -> None:
    """Imports happen at process start; this only makes the pool spawn its workers."""


class CorruptionWorkers:
    """A process pool generating corrupted copies of images."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("forkserver")
        self._lifeline = Lifeline()
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=bind_to_server,
            initargs=(self._lifeline.reader,),
        )
        self._workers = workers
        self._warming: list[Future[None]] = []

    async def corrupt_all(
        self, images: Sequence[np.ndarray], name: str, severity: int, seed: int
    ) -> list[np.ndarray]:
        """Corrupt every image (image i uses index i), in order."""
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(
                self._pool, _corrupt_chunk, list(images[i : i + CHUNK]), name, severity, seed, i
            )
            for i in range(0, len(images), CHUNK)
        ]
        return [image for chunk in await asyncio.gather(*futures) for image in chunk]

    def warm(self) -> None:
        """Start the worker processes now, so the first job does not wait for them."""
        self._warming = [self._pool.submit(_noop) for _ in range(self._workers)]

    async def ready(self) -> None:
        """Wait until the workers started by warm() are up."""
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self._warming))

    def close(self) -> None:
        """Stop the workers (pending work is cancelled) and reap them."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._lifeline.close()
