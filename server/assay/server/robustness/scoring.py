"""Class scores for uint8 images from a served model, through its own batcher.

Evaluations feed thousands of generated images to the same MicroBatcher
online requests use, so Triton and onnxruntime see full batches and the
model's preprocessing is applied exactly as for Predict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np

from assay.server.errors import FailedPreconditionError
from assay.server.models.binding import class_output
from assay.server.models.config import OutputRole
from assay.server.models.preprocess import PixelImage
from assay.server.models.registry import ServedModel

CHUNK = 64
"""Images per preprocessing task and per batcher submission."""
IN_FLIGHT = 4
"""Chunks a scorer has queued at once: enough to fill batches, never enough to
crowd online requests out of the model's bounded queue."""


class ModelScorer:
    """Logits (or probabilities) of a classifier for batches of uint8 RGB images."""

    def __init__(self, model: ServedModel, pool: Executor) -> None:
        self.model = model
        output = class_output(model.config)
        if output is None:
            raise FailedPreconditionError(
                f"model {model.name!r} has no logits or probabilities output; "
                "robustness suites need a classifier"
            )
        self._output = output
        self.outputs_probabilities = OutputRole.PROBABILITIES in model.config.outputs
        self._pool = pool
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self.images_scored = 0

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's class names."""
        return self.model.labels

    async def scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """N x K class scores for N uint8 H x W x 3 images (any sizes)."""
        chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
        parts = await asyncio.gather(*(self._chunk(c) for c in chunks))
        self.images_scored += len(images)
        return np.concatenate(parts).astype(np.float32, copy=False)

    async def model_pixels(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB images -> N x H x W x C pixels at the model's size and colour."""
        prep = self.model.preprocessor
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: prep.model_pixels([PixelImage(i) for i in images])
        )

    async def scores_from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Class scores for N x H x W x C pixels at model size (float 0..255 allowed)."""
        prep = self.model.preprocessor
        parts = []
        for start in range(0, len(pixels), CHUNK):
            batch = prep.normalise(pixels[start : start + CHUNK])
            async with self._in_flight:
                outputs = await self.model.batcher.submit({self.model.input_name: batch})
            parts.append(outputs[self._output].reshape(len(batch), -1))
        self.images_scored += len(pixels)
        return np.concatenate(parts).astype(np.float32, copy=False)

    async def _chunk(self, images: Sequence[np.ndarray]) -> np.ndarray:
        async with self._in_flight:
            return await self._score_chunk(images)

    async def _score_chunk(self, images: Sequence[np.ndarray]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        prep = self.model.preprocessor
        batch = await loop.run_in_executor(
            self._pool, lambda: prep.build(prep.open([PixelImage(i) for i in images]))
        )
        outputs = await self.model.batcher.submit({self.model.input_name: batch})
        return outputs[self._output].reshape(len(images), -1)
