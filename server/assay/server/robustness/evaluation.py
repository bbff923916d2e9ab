"""Robustness evaluations as jobs (datasets on disk) or inline (small batches).

Both validate everything before any work starts, so a bad request fails the
call, not the job: the model must exist and output class scores, the suite
must be valid, the dataset must lie under a root and use the model's labels.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from assay.server.datasets import Dataset, DatasetRoots, label_indices, load_rgb
from assay.server.errors import FailedPreconditionError, InvalidArgumentError
from assay.server.jobs.manager import JobContext
from assay.server.models.preprocess import (
    EncodedImage,
    ImageInput,
    InputTensor,
    PixelImage,
    check_pixel_image,
)
from assay.server.models.registry import ModelRegistry
from assay.server.robustness.generation import CorruptionWorkers
from assay.server.robustness.report import UnitData, build_report
from assay.server.robustness.runner import WHITE_BOX, Arrays, EvaluationInputs, SuiteRunner
from assay.server.robustness.scoring import ModelScorer
from assay.server.robustness.specs import RobustnessSpec
from assay.server.robustness.suite import SuiteSpec, parse_suite


@dataclass
class InlineBatch:
    """A ScoreRobustness request in domain terms."""

    model: str
    version: str
    images: Sequence[ImageInput]
    labels: Sequence[str]
    groups: Sequence[str] | None
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class _MemorySink:
    """Units kept in memory (inline evaluations have no job)."""

    units: dict[str, UnitData] = field(default_factory=dict)

    def done_keys(self) -> set[str]:
        return set(self.units)

    async def put(self, key: str, meta: dict[str, Any], arrays: Arrays) -> None:
        self.units[key] = UnitData(meta, arrays)

    async def progress(self, done: int, total: int, stage: str) -> None:
        return None


class RobustnessJobs:
    """The "robustness" job kind and the inline ScoreRobustness path."""

    kind = "robustness"
    spec_type = RobustnessSpec

    def __init__(
        self,
        registry: ModelRegistry,
        roots: DatasetRoots,
        pool: Executor,
        workers: CorruptionWorkers,
        *,
        max_pixels: int,
        inline_max_images: int,
    ) -> None:
        self._registry = registry
        self._roots = roots
        self._pool = pool
        self._workers = workers
        self._max_pixels = max_pixels
        self._inline_max = inline_max_images

    def _scorers(
        self, model: str, version: str, baseline: tuple[str, str] | None = None
    ) -> dict[str, ModelScorer]:
        scorers = {"model": ModelScorer(self._registry.get(model, version), self._pool)}
        if baseline is not None:
            other = self._registry.get(*baseline)
            scorers["baseline"] = ModelScorer(other, self._pool)
            if other.labels != scorers["model"].labels:
                raise InvalidArgumentError(
                    f"baseline {other.name!r} has other labels than {model!r}; "
                    "a baseline must classify the same classes"
                )
        return scorers

    def _job_scorers(self, spec: RobustnessSpec) -> dict[str, ModelScorer]:
        baseline = (spec.baseline, spec.baseline_version) if spec.baseline else None
        return self._scorers(spec.model, spec.version, baseline)

    def _suite(self, model_name: str, version: str, suite: SuiteSpec) -> SuiteSpec:
        white_box = [a.kind.value for a in suite.attacks if a.kind in WHITE_BOX]
        if not white_box:
            return suite
        model = self._registry.get(model_name, version)
        if model.config.torchscript is None:
            raise FailedPreconditionError(
                f"white-box attacks {white_box} need a differentiable (TorchScript) copy of "
                f"{model.name!r}; register one with `torchscript:` in its entry, or use "
                "square_linf / square_l2 (query-only)"
            )
        if importlib.util.find_spec("torch") is None:
            raise FailedPreconditionError(
                f"white-box attacks {white_box} need torch on the server: "
                "pip install 'assay[train]'"
            )
        return suite

    def _dataset(
        self, spec: RobustnessSpec, suite: SuiteSpec, labels: Sequence[str]
    ) -> tuple[Dataset, np.ndarray]:
        dataset = self._roots.open(Path(spec.dataset)).subset(suite.sample_limit, suite.seed)
        return dataset, label_indices(dataset, labels)

    def prepare(self, spec: RobustnessSpec) -> int:
        """Check models, suite and dataset against the server; the number of units."""
        scorers = self._job_scorers(spec)
        suite = self._suite(spec.model, spec.version, spec.suite())
        self._dataset(spec, suite, scorers["model"].labels)
        return len(suite.units())

    async def run(self, context: JobContext[RobustnessSpec]) -> dict[str, Any]:
        """Run (or resume) a job and build its report."""
        spec = context.spec
        scorers = self._job_scorers(spec)
        suite = self._suite(spec.model, spec.version, spec.suite())
        dataset, labels = self._dataset(spec, suite, scorers["model"].labels)
        images = await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: [load_rgb(s.path, self._max_pixels) for s in dataset.samples]
        )
        groups = [s.group or "" for s in dataset.samples] if dataset.has_groups else None
        inputs = EvaluationInputs(images, labels, groups)
        torchscript = scorers["model"].model.config.torchscript
        await SuiteRunner(suite, inputs, scorers, self._workers, torchscript).run(context)
        units = {k: UnitData(u.meta, u.arrays) for k, u in (await context.units()).items()}
        source = str(dataset.source)
        echo = spec.model_dump(mode="json")
        return build_report(suite, units, inputs, scorers, source=source, spec=echo)

    async def score_inline(self, batch: InlineBatch) -> dict[str, Any]:
        """The same report for a small batch of images, without a job."""
        spec = {"model": batch.model, "version": batch.version, "preset": batch.preset,
                "overrides": batch.overrides}  # fmt: skip
        scorers = self._scorers(batch.model, batch.version)
        suite = self._suite(batch.model, batch.version, parse_suite(batch.preset, batch.overrides))
        count = len(batch.images)
        if not 1 <= count <= self._inline_max:
            raise InvalidArgumentError(
                f"ScoreRobustness takes 1..{self._inline_max} images, got {count}; "
                "use StartEvaluation for larger sets"
            )
        if len(batch.labels) != count or (batch.groups is not None and len(batch.groups) != count):
            raise InvalidArgumentError(
                f"give one label (and group, if any) per image: {count} images"
            )
        index = {label: i for i, label in enumerate(scorers["model"].labels)}
        unknown = sorted(set(batch.labels) - index.keys())
        if unknown:
            raise InvalidArgumentError(
                f"labels not among the model's labels: {', '.join(unknown[:10])}"
            )
        images = await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: [_rgb(image, self._max_pixels) for image in batch.images]
        )
        labels = np.array([index[label] for label in batch.labels], dtype=np.int64)
        inputs = EvaluationInputs(images, labels, batch.groups)
        sink = _MemorySink()
        torchscript = scorers["model"].model.config.torchscript
        await SuiteRunner(suite, inputs, scorers, self._workers, torchscript).run(sink)
        return build_report(suite, sink.units, inputs, scorers, source="inline", spec=spec)


def _rgb(image: ImageInput, max_pixels: int) -> np.ndarray:
    """An inline image as uint8 RGB (tensors are refused: corruptions need pixels)."""
    if isinstance(image, InputTensor):
        raise InvalidArgumentError("ScoreRobustness needs images (encoded or raw), not tensors")
    if isinstance(image, PixelImage):
        check_pixel_image(image.array, max_pixels)
        array = image.array
        return (
            np.repeat(array, 3, axis=2)
            if array.shape[2] == 1
            else np.ascontiguousarray(array[:, :, :3])
        )
    assert isinstance(image, EncodedImage)
    try:
        with Image.open(io.BytesIO(image.data)) as pil:
            if pil.width * pil.height > max_pixels:
                raise InvalidArgumentError(f"image over {max_pixels} pixels")
            return np.asarray(pil.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise InvalidArgumentError(f"image could not be decoded ({exc})") from None
