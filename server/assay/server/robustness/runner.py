"""Runs a robustness suite unit by unit, persisting each unit as it finishes.

A unit is one independent piece of work with a stable key ("clean",
"corruption/fog/3", "perturbation/translate", "shift", "attack/0/square_linf").
Units already stored are skipped, so a job killed mid-way resumes where it
stopped. Every unit scores the same generated images with the model and,
when given, the baseline model, so their comparison is paired.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from assay.server.errors import FailedPreconditionError
from assay.server.models.config import Color, Layout
from assay.server.models.preprocess import Preprocessor
from assay.server.robustness.attacks import (
    WhiteBoxResult,
    fgsm,
    load_torchscript,
    pgd,
    square_attack,
)
from assay.server.robustness.generation import CorruptionWorkers
from assay.server.robustness.perturbations import perturbation_sequence
from assay.server.robustness.scoring import ModelScorer
from assay.server.robustness.suite import AttackKind, SuiteSpec

WHITE_BOX = frozenset({AttackKind.FGSM, AttackKind.PGD_LINF, AttackKind.PGD_L2})

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class EvaluationInputs:
    """The dataset in memory: uint8 RGB images, label indices, optional groups."""

    images: Sequence[np.ndarray]
    labels: np.ndarray
    groups: Sequence[str] | None = None


class UnitSink(Protocol):
    """Where finished units go (the job store, through the job manager)."""

    def done_keys(self) -> set[str]:
        """Keys of units already stored."""
        ...

    async def put(self, key: str, meta: dict[str, Any], arrays: Arrays) -> None:
        """Persist one finished unit."""
        ...

    async def progress(self, done: int, total: int, stage: str) -> None:
        """Report progress (units done of total, and what runs now)."""
        ...


PREFETCH = 2
"""Corruption units generated ahead of the one being scored."""

UnitFn = Callable[[str], Awaitable[tuple[dict[str, Any], Arrays]]]


@dataclass
class SuiteRunner:
    """Computes the units of one suite for a model (and its optional baseline)."""

    suite: SuiteSpec
    inputs: EvaluationInputs
    scorers: dict[str, ModelScorer]
    """"model" and, when given, "baseline"."""
    workers: CorruptionWorkers
    torchscript: Path | None = None
    """The model's differentiable copy, for white-box attacks."""
    _generating: dict[str, asyncio.Future[list[np.ndarray]]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Corruption units being generated ahead, by key."""

    async def run(self, sink: UnitSink) -> None:
        """Compute and store every unit that is not stored yet.

        Corrupted images for the next unit are generated (in the worker
        processes) while the current unit is being scored, so neither the
        workers nor the backend wait for the other.
        """
        keys = self.suite.units()
        done = sink.done_keys()
        todo = [key for key in keys if key not in done]
        try:
            for position, key in enumerate(todo):
                self._prefetch(todo[position + 1 : position + 1 + PREFETCH])
                await sink.progress(len(done), len(keys), key)
                started = time.perf_counter()
                meta, arrays = await self._unit(key)
                meta["seconds"] = round(time.perf_counter() - started, 4)
                await sink.put(key, meta, arrays)
                done.add(key)
        finally:
            for task in self._generating.values():
                task.cancel()
            self._generating.clear()
        await sink.progress(len(done), len(keys), "report")

    def _prefetch(self, keys: Sequence[str]) -> None:
        for key in keys:
            kind, _, rest = key.partition("/")
            if kind == "corruption" and key not in self._generating:
                name, _, severity = rest.partition("/")
                work = self.workers.corrupt_all(
                    self.inputs.images, name, int(severity), self.suite.seed
                )
                self._generating[key] = asyncio.ensure_future(work)

    async def _unit(self, key: str) -> tuple[dict[str, Any], Arrays]:
        kind, _, rest = key.partition("/")
        if kind == "clean":
            return await self._clean()
        if kind == "corruption":
            name, _, severity = rest.partition("/")
            return await self._corruption(name, int(severity))
        if kind == "perturbation":
            return await self._perturbation(rest)
        if kind == "shift":
            return await self._shift()
        if kind == "attack":
            return await self._attack(int(rest.partition("/")[0]))
        raise ValueError(f"unknown unit {key!r}")

    async def _score_all(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        roles = list(self.scorers)
        scores = await asyncio.gather(*(self.scorers[r].scores(images) for r in roles))
        return dict(zip(roles, scores, strict=True))

    async def _clean(self) -> tuple[dict[str, Any], Arrays]:
        scores = await self._score_all(self.inputs.images)
        return {"images": len(self.inputs.images)}, {f"{r}/scores": s for r, s in scores.items()}

    async def _corruption(self, name: str, severity: int) -> tuple[dict[str, Any], Arrays]:
        self._prefetch([f"corruption/{name}/{severity}"])
        corrupted = await self._generating.pop(f"corruption/{name}/{severity}")
        scores = await self._score_all(corrupted)
        return {"images": len(corrupted)}, _top1(scores)

    async def _perturbation(self, name: str) -> tuple[dict[str, Any], Arrays]:
        frames = self.suite.perturbation_frames
        rng = np.random.default_rng([self.suite.seed, 7, zlib.crc32(name.encode())])
        sequences = await asyncio.to_thread(
            lambda: [
                f
                for image in self.inputs.images
                for f in perturbation_sequence(image, name, frames, rng)
            ]
        )
        scores = await self._score_all(sequences)
        count = len(self.inputs.images)
        return {"frames": frames}, {
            f"{role}/preds": s.argmax(axis=1).reshape(count, frames).astype(np.int32)
            for role, s in scores.items()
        }

    async def _shift(self) -> tuple[dict[str, Any], Arrays]:
        rng = np.random.default_rng([self.suite.seed, 11])
        pairs = await asyncio.to_thread(
            lambda: [_random_shift(i, rng) for i in self.inputs.images for _ in (0, 1)]
        )
        scores = await self._score_all(pairs)
        arrays = {}
        for role, s in scores.items():
            preds = s.argmax(axis=1).astype(np.int32)
            arrays[f"{role}/pred_a"], arrays[f"{role}/pred_b"] = preds[0::2], preds[1::2]
        return {"max_shift_fraction": SHIFT_FRACTION}, arrays

    async def _attack(self, index: int) -> tuple[dict[str, Any], Arrays]:
        """A query-only Square attack on the model, in its own pixel space."""
        spec = self.suite.attacks[index]
        if spec.kind in WHITE_BOX:
            return await self._white_box(index)
        scorer = self.scorers["model"]
        pixels = (await scorer.model_pixels(self.inputs.images)).astype(np.float32) / 255.0

        async def score(batch: np.ndarray) -> np.ndarray:
            return await scorer.scores_from_pixels(batch * 255.0)

        norm: Literal["linf", "l2"] = "linf" if spec.kind is AttackKind.SQUARE_LINF else "l2"
        result = await square_attack(
            score, pixels, np.asarray(self.inputs.labels), norm=norm, epsilon=spec.epsilon,
            max_queries=spec.queries, rng=np.random.default_rng([self.suite.seed, 13, index]),
        )  # fmt: skip
        meta = {"images": len(pixels), "score_calls": result.score_calls, "norm": norm,
                "epsilon": spec.epsilon, "queries_budget": spec.queries}  # fmt: skip
        return meta, {
            "model/clean_correct": result.clean_correct,
            "model/success": result.success,
            "model/queries": result.queries.astype(np.int32),
        }

    async def _white_box(self, index: int) -> tuple[dict[str, Any], Arrays]:
        """FGSM/PGD on the differentiable copy; robust accuracy measured on the served model."""
        spec = self.suite.attacks[index]
        scorer = self.scorers["model"]
        if self.torchscript is None:
            raise FailedPreconditionError(f"{spec.kind.value} needs the model's TorchScript copy")
        pixels = (await scorer.model_pixels(self.inputs.images)).astype(np.float32) / 255.0
        labels = np.asarray(self.inputs.labels)
        preprocess = torch_preprocess(scorer.model.preprocessor)
        norm: Literal["linf", "l2"] = "l2" if spec.kind is AttackKind.PGD_L2 else "linf"

        def attack() -> WhiteBoxResult:
            model = load_torchscript(self.torchscript)  # type: ignore[arg-type]
            if spec.kind is AttackKind.FGSM:
                return fgsm(model, pixels, labels, epsilon=spec.epsilon, preprocess=preprocess)
            return pgd(model, pixels, labels, norm=norm, epsilon=spec.epsilon, steps=spec.steps,
                       preprocess=preprocess, seed=self.suite.seed)  # fmt: skip

        result = await asyncio.to_thread(attack)
        served = (await scorer.scores_from_pixels(result.adversarial * 255.0)).argmax(axis=1)
        clean = (await scorer.scores_from_pixels(pixels * 255.0)).argmax(axis=1) == labels
        meta = {"images": len(pixels), "norm": norm, "epsilon": spec.epsilon, "steps": spec.steps,
                "max_perturbation": float(result.max_perturbation), "score_calls": 0}  # fmt: skip
        return meta, {
            "model/clean_correct": clean,
            "model/success": clean & (served != labels),
            "model/queries": np.zeros(len(pixels), np.int32),
        }


def torch_preprocess(prep: Preprocessor) -> Callable[[Any], Any]:
    """The preprocessor's normalise step in torch, so gradients flow through it.

    Takes N x H x W x C images in [0, 1] (model size and colour).
    """
    import torch

    gain = torch.from_numpy(prep.gain * 255.0)
    bias = torch.from_numpy(prep.bias)
    bgr = prep.spec.color is Color.BGR
    nchw = prep.spec.layout is Layout.NCHW

    def apply(x: Any) -> Any:
        x = x * gain + bias
        if bgr:
            x = x.flip(-1)
        return x.permute(0, 3, 1, 2) if nchw else x

    return apply


SHIFT_FRACTION = 0.125
"""Shifts are drawn uniformly up to this fraction of each side (Zhang 2019 uses 32 of 224 px)."""


def _random_shift(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    dy = int(rng.integers(-int(height * SHIFT_FRACTION), int(height * SHIFT_FRACTION) + 1))
    dx = int(rng.integers(-int(width * SHIFT_FRACTION), int(width * SHIFT_FRACTION) + 1))
    matrix = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101)


def _top1(scores: dict[str, np.ndarray]) -> Arrays:
    arrays: Arrays = {}
    for role, s in scores.items():
        arrays[f"{role}/pred"] = s.argmax(axis=1).astype(np.int32)
        arrays[f"{role}/scores"] = s.astype(np.float32)
    return arrays
