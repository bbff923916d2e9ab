"""One detector's probability of "generated" for full-resolution images.

A served ``aigen_detector`` sees each image through its scoring policy
(:class:`~assay.server.models.config.AigenSpec`):

* ``crops``: native-resolution tiles of the model's input size
  (:func:`~assay.server.aigen.tiling.crops`, capped at ``max_crops``), every
  crop scored in one batched pass, pooled by the mean of the top-k crop
  probabilities or their maximum;
* ``resize``: the model's own input resize, one score per image.

The model's output is read as the probability of "generated": one column is a
logit (role ``logits``, through a sigmoid) or a probability (role
``probabilities``); two or more columns take ``aigen.generated_index`` after a
softmax (logits) or as is (probabilities).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from assay.server.aigen.tiling import Aggregation, CropSet, aggregate, crops
from assay.server.errors import BackendError, InvalidArgumentError
from assay.server.models.config import (
    AigenAggregation,
    AigenPolicy,
    Color,
    ModelConfig,
    OutputRole,
    Task,
)
from assay.server.models.registry import ServedModel
from assay.server.stats.softmax import sigmoid, softmax

CHUNK_ROWS = 256
"""Crops (or images) per batcher submission: bounded memory, overlapped with preprocessing."""


@dataclass(frozen=True)
class CropProbability:
    """One crop's box (source pixels) and probability."""

    top: int
    left: int
    height: int
    width: int
    probability: float


@dataclass(frozen=True)
class DetectorScores:
    """A detector's pooled probabilities for a list of images."""

    probabilities: np.ndarray
    """Shape (N,), float64 in [0, 1]."""
    crops: list[list[CropProbability]]
    """Per image, each crop's probability ("crops" policy; empty for "resize")."""
    padded: list[bool]
    """Per image, whether it was smaller than the crop and reflection-padded."""


def check_detector(model: ServedModel) -> None:
    """Refuse a model that is not an AI-generated-image detector."""
    if model.config.task is not Task.AIGEN_DETECTOR:
        raise InvalidArgumentError(
            f"model {model.name!r} is a {model.config.task.value}, not an aigen_detector; "
            "name a detector (ListModels shows each model's task)"
        )


def generated_probability(config: ModelConfig, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Per-row probability of "generated" from the detector's score output."""
    role = OutputRole.PROBABILITIES if OutputRole.PROBABILITIES in config.outputs else None
    name = config.outputs[role or OutputRole.LOGITS]
    values = outputs[name].astype(np.float64)
    values = values.reshape(len(values), -1)
    index = config.aigen.generated_index
    if index is None:
        column = values[:, 0]
        probs = column if role else sigmoid(column)
    elif role:
        probs = values[:, index]
    else:
        probs = softmax(values)[:, index]
    if not np.all(np.isfinite(probs)):
        raise BackendError(f"detector {config.name!r} returned non-finite scores")
    return np.clip(probs, 0.0, 1.0)


def _model_colour(model: ServedModel, image: np.ndarray) -> np.ndarray:
    """RGB -> the detector's colour (grey models see luma, as PIL's "L")."""
    if model.config.input.color is not Color.GRAY:
        return image
    return np.asarray(Image.fromarray(image).convert("L"), dtype=np.uint8)[:, :, None]


def tile(model: ServedModel, images: Sequence[np.ndarray]) -> list[CropSet]:
    """Each image's native-resolution crops at the detector's input size."""
    spec = model.config.input
    size = (spec.height, spec.width)
    cap = model.config.aigen.max_crops
    return [crops(_model_colour(model, image), size, cap) for image in images]


class DetectorScorer:
    """Runs images through one detector's policy and batcher."""

    def __init__(self, pool: Executor) -> None:
        self._pool = pool

    async def score(self, model: ServedModel, images: Sequence[np.ndarray]) -> DetectorScores:
        """Pooled probabilities (and per-crop ones) for RGB uint8 images."""
        check_detector(model)
        if model.config.aigen.policy is AigenPolicy.RESIZE:
            return await self._score_resized(model, images)
        return await self._score_crops(model, images)

    async def _run(self, model: ServedModel, batch: np.ndarray) -> np.ndarray:
        outputs = await model.batcher.submit({model.input_name: batch})
        return generated_probability(model.config, outputs)

    async def _score_crops(
        self, model: ServedModel, images: Sequence[np.ndarray]
    ) -> DetectorScores:
        loop = asyncio.get_running_loop()
        sets = await loop.run_in_executor(self._pool, tile, model, images)
        pixels = np.concatenate([s.crops for s in sets])
        prep = model.preprocessor
        probs = np.empty(len(pixels), dtype=np.float64)
        # Normalise chunk k+1 on the pool while chunk k runs on the backend.
        starts = range(0, len(pixels), CHUNK_ROWS)
        pending = loop.run_in_executor(self._pool, prep.normalise, pixels[:CHUNK_ROWS])
        for start in starts:
            batch = await pending
            following = start + CHUNK_ROWS
            if following < len(pixels):
                pending = loop.run_in_executor(
                    self._pool, prep.normalise, pixels[following : following + CHUNK_ROWS]
                )
            probs[start : start + len(batch)] = await self._run(model, batch)
        spec = model.config.aigen
        how: Aggregation = "max" if spec.aggregation is AigenAggregation.MAX else "top_k_mean"
        per_image = np.split(probs, np.cumsum([len(s.boxes) for s in sets])[:-1])
        pooled = np.array([aggregate(p, how, spec.top_k) for p in per_image])
        per_crop = [
            [
                CropProbability(top, left, s.crop_size[0], s.crop_size[1], float(p))
                for (top, left), p in zip(s.boxes, values, strict=True)
            ]
            for s, values in zip(sets, per_image, strict=True)
        ]
        return DetectorScores(pooled, per_crop, [s.padded for s in sets])

    async def _score_resized(
        self, model: ServedModel, images: Sequence[np.ndarray]
    ) -> DetectorScores:
        loop = asyncio.get_running_loop()
        prep = model.preprocessor

        def build(chunk: Sequence[np.ndarray]) -> np.ndarray:
            return prep.build([Image.fromarray(image) for image in chunk])

        parts = []
        for start in range(0, len(images), CHUNK_ROWS):
            batch = await loop.run_in_executor(
                self._pool, build, images[start : start + CHUNK_ROWS]
            )
            parts.append(await self._run(model, batch))
        probs = np.concatenate(parts)
        return DetectorScores(probs, [[] for _ in images], [False] * len(images))
